"""The direct-command helpers (move_stage, set_channel, ...) shared by every blocking client."""

from __future__ import annotations

from scopeflow import (
    CommandAck,
    DirectCommand,
    MoveStage,
    Pause,
    Resume,
    SetChannel,
    SetExposure,
    SetIllumination,
    SetObjective,
    Stop,
)

__all__ = ["DirectCommands"]


class DirectCommands:
    """Mixin: one method per direct command, all through ``self.command``; ``command_id``
    (default: a fresh one) makes a retry safe: the edge runs an id at most once."""

    def command(self, command: DirectCommand, *, command_id: str | None = None) -> CommandAck:
        raise NotImplementedError

    def move_stage(
        self,
        x: float | None = None,
        y: float | None = None,
        z: float | None = None,
        *,
        command_id: str | None = None,
    ) -> CommandAck:
        return self.command(MoveStage(x=x, y=y, z=z), command_id=command_id)

    def set_channel(self, channel: str, *, command_id: str | None = None) -> CommandAck:
        return self.command(SetChannel(channel=channel), command_id=command_id)

    def set_exposure(self, exposure_ms: float, *, command_id: str | None = None) -> CommandAck:
        return self.command(SetExposure(exposure_ms=exposure_ms), command_id=command_id)

    def set_illumination(self, intensity: float, *, command_id: str | None = None) -> CommandAck:
        return self.command(SetIllumination(intensity=intensity), command_id=command_id)

    def set_objective(self, objective: str, *, command_id: str | None = None) -> CommandAck:
        return self.command(SetObjective(objective=objective), command_id=command_id)

    def pause(self, *, command_id: str | None = None) -> CommandAck:
        return self.command(Pause(), command_id=command_id)

    def resume(self, *, command_id: str | None = None) -> CommandAck:
        return self.command(Resume(), command_id=command_id)

    def stop(self, *, command_id: str | None = None) -> CommandAck:
        return self.command(Stop(), command_id=command_id)
