"""pymmcore-plus's MDAEngine, serialised with direct commands through one hardware lock, and
strict about device errors.

pymmcore-plus's engine logs a failed stage move, channel switch or snap and goes on: the frame
is taken at the wrong place, or no frame comes and a client waits for it. This engine instead
tries a failed event again (its `ErrorPolicy` says how often), and when the last attempt fails
it reports a `DeviceFault` (the step, the device, the error and the fix) to its
`FailureHandler` and skips the event: no frame, and the handler (the agent) announces the
failure on the stream and applies the policy's ``skip`` or ``abort``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import useq
from pymmcore_plus import CMMCorePlus
from pymmcore_plus.mda import MDAEngine, SkipEvent

from scopeflow import EnvelopeViolation

if TYPE_CHECKING:
    from pymmcore_plus.mda._protocol import PImagePayload  # private: no public name upstream

__all__ = ["DeviceActions", "DeviceFault", "EventGuard", "FailureHandler", "LockedMDAEngine"]

_AGAIN = "submit the failed events again under a new command id"
_CAMERA = "power, cable, driver, trigger and exposure settings"
_STAGE = "power, cable, controller, travel limits and anything blocking it"
_DEVICE = "power, cable, driver"


@dataclass(frozen=True)
class DeviceFault:
    """Why an event failed: the step, the device (when known), the error and the fix."""

    step: Literal["setup", "snap", "run"]
    device: str | None
    error: str
    fix: str


class FailureHandler(Protocol):
    """Where the engine sends failed events (the agent)."""

    def retries_for(self, event: useq.MDAEvent) -> int:
        """How many times to try ``event`` again after a failure."""
        ...

    def event_failed(self, event: useq.MDAEvent, fault: DeviceFault, attempts: int) -> None:
        """``event`` failed ``attempts`` times; called without the hardware lock held."""
        ...


class EventGuard(Protocol):
    """The safety envelope at run time (`tasks.hardware._guard.EnvelopeGuard`): each method
    raises `EnvelopeViolation` to refuse; called under the hardware lock."""

    def before_setup(self, event: useq.MDAEvent, z_correction: float) -> None:
        """Before anything moves for ``event``."""
        ...

    def before_exposure(self, event: useq.MDAEvent) -> object:
        """Right before the light goes on for ``event`` (charges its dose)."""
        ...


class DeviceActions(Protocol):
    """Runs a `useq.CustomAction` event (a pump run, a stimulation:
    `tasks.hardware._device_runner.DeviceActionRunner`); called under the hardware lock,
    raises `EnvelopeViolation` to refuse or the device's error."""

    def run(self, event: useq.MDAEvent) -> None: ...


class LockedMDAEngine(MDAEngine):
    """Holds ``lock`` while an event sets up and executes, so a direct command never interleaves;
    a device error fails the event (after its retries) instead of being logged; a ``guard``
    refuses, without retries, an event the envelope does not allow as the microscope is now.

    A stop leaves the stage where it is (inside the envelope): pymmcore-plus would move it back
    to where the run began, a position no command asked for."""

    def __init__(
        self,
        mmc: CMMCorePlus,
        lock: threading.RLock,
        failures: FailureHandler | None = None,
        guard: EventGuard | None = None,
        devices: DeviceActions | None = None,
    ) -> None:
        super().__init__(mmc, restore_initial_state=False)
        self._hardware_lock = lock
        self._failures = failures
        self._guard = guard
        self._devices = devices
        self._shutter_managed = False

    def setup_sequence(self, sequence: useq.MDASequence) -> Any:
        result = super().setup_sequence(sequence)
        self._shutter_managed = self.mmcore.getAutoShutter()
        return result

    # setup -------------------------------------------------------------------------------------

    def setup_event(self, event: useq.MDAEvent) -> None:
        if self._guard is not None:
            with self._hardware_lock:
                fault = self._guarded(self._guard.before_setup, event, self._correction(event))
            if fault is not None:
                self._failed(event, fault, 1)
                raise SkipEvent(num_frames=0, reason=fault.error)
        if not _plain(event):
            with self._hardware_lock:
                super().setup_event(event)
            return
        attempts = 0
        for attempts in range(1, self._retries(event) + 2):  # noqa: B007 - used after the loop
            with self._hardware_lock:
                fault = self._setup_strictly(event)
            if fault is None:
                return
        self._failed(event, fault, attempts)
        raise SkipEvent(num_frames=0, reason=fault.error)

    def _setup_strictly(self, event: useq.MDAEvent) -> DeviceFault | None:
        core = self.mmcore
        if event.x_pos is not None or event.y_pos is not None:
            device = core.getXYStageDevice()
            try:
                x, y = event.x_pos, event.y_pos
                if x is None or y is None:
                    cx, cy = core.getXYPosition()
                    x, y = cx if x is None else x, cy if y is None else y
                core.setXYPosition(x, y)
                core.waitForDevice(device)
            except Exception as exc:
                return _device_fault(f"moving XY stage {device!r}", device, exc, _STAGE)
        if event.z_pos is not None:
            device = core.getFocusDevice()
            try:
                core.setZPosition(event.z_pos + self._correction(event))
                core.waitForDevice(device)
            except Exception as exc:
                return _device_fault(f"moving focus drive {device!r}", device, exc, _STAGE)
        if (channel := event.channel) is not None:
            try:
                core.setConfig(channel.group, channel.config)
            except Exception as exc:
                devices = _config_devices(core, channel.group, channel.config)
                return _device_fault(
                    f"switching {channel.group!r} to {channel.config!r}", devices, exc
                )
        if event.exposure is not None:
            camera = core.getCameraDevice()
            try:
                core.setExposure(event.exposure)
            except Exception as exc:
                return _device_fault(
                    f"setting the exposure of camera {camera!r}", camera, exc, _CAMERA
                )
        for device, prop, value in event.properties or ():
            try:
                core.setProperty(device, prop, value)
            except Exception as exc:
                return _device_fault(f"setting {device}.{prop} to {value!r}", device, exc)
        if event.keep_shutter_open and self._shutter_managed and core.getAutoShutter():
            core.setAutoShutter(False)
            core.setShutterOpen(True)
        try:
            core.waitForSystem()
        except Exception as exc:
            return _device_fault("waiting for the devices to settle", None, exc)
        return None

    # exec --------------------------------------------------------------------------------------

    def exec_event(self, event: useq.MDAEvent) -> Iterable[PImagePayload | None]:
        if isinstance(event.action, useq.CustomAction) and self._devices is not None:
            return self._act(event, self._devices)
        if _plain(event) and isinstance(event.action, useq.AcquireImage | None):
            return self._snap(event)
        return self._locked(event, super().exec_event(event))

    def _snap(self, event: useq.MDAEvent) -> Iterator[Any]:
        core = self.mmcore
        attempts = 0
        fault: DeviceFault | None = None
        for attempts in range(1, self._retries(event) + 2):  # noqa: B007 - used after the loop
            with self._hardware_lock:
                camera = core.getCameraDevice()
                refused = self._admit(event)  # under the lock: nothing changes before the snap
                if refused is not None:
                    fault = refused
                    break
                try:
                    payloads = self._snap_once(event)
                except Exception as exc:
                    fault = _device_fault(
                        f"snapping on camera {camera!r}", camera, exc, _CAMERA, "snap"
                    )
                    continue
                if not payloads:
                    fault = DeviceFault(
                        "snap",
                        camera,
                        f"camera {camera!r} gave no image",
                        f"check camera {camera!r} ({_CAMERA}), then {_AGAIN}",
                    )
                    continue
                for payload in payloads:  # noqa: UP028 - the runner's pause/cancel sends are
                    yield payload  # ignored (a list cannot take them); under the lock, as before
                return
        assert fault is not None
        self._failed(event, fault, attempts)

    def _snap_once(self, event: useq.MDAEvent) -> list[tuple[Any, useq.MDAEvent, Any]]:
        core = self.mmcore
        core.snapImage()
        t0 = event.metadata.get("runner_t0") or time.perf_counter()
        event_time_ms = (time.perf_counter() - t0) * 1000
        if not event.keep_shutter_open and self._shutter_managed:
            core.setShutterOpen(False)
        n_cameras = core.getNumberOfCameraChannels()
        payloads = []
        for cam in range(n_cameras):
            image = core.getImage(cam)
            if image is None or image.size == 0:
                return []
            meta = self.get_frame_metadata(
                event,
                runner_time_ms=event_time_ms,
                camera_device=core.getPhysicalCameraDevice(cam),
                include_position=self.include_frame_position_metadata is not False,
            )
            sub = event
            if n_cameras > 1:
                sub = event.model_copy(update={"index": {**event.index, "cam": cam}})
            payloads.append((image, sub, meta))
        return payloads

    def _act(self, event: useq.MDAEvent, devices: DeviceActions) -> Iterator[Any]:
        """A device action: run once (not retried: a pump that failed may have dispensed part
        of its volume), no frame; a refusal or a device error fails the event."""
        fault: DeviceFault | None = None
        with self._hardware_lock:
            try:
                devices.run(event)
            except EnvelopeViolation as exc:
                fault = DeviceFault("run", None, f"refused by the safety envelope: {exc}", _AGAIN)
            except Exception as exc:
                device = str((event.action.data or {}).get("device") or "") or None  # type: ignore[union-attr]
                fault = DeviceFault(
                    "run",
                    device,
                    f"device action {event.action.name!r} failed: {exc}",  # type: ignore[union-attr]
                    f"check device {device!r} ({_DEVICE}), then {_AGAIN}",
                )
        if fault is not None:
            self._failed(event, fault, 1)
        yield from ()

    # helpers -----------------------------------------------------------------------------------

    def _retries(self, event: useq.MDAEvent) -> int:
        return self._failures.retries_for(event) if self._failures is not None else 0

    def _failed(self, event: useq.MDAEvent, fault: DeviceFault, attempts: int) -> None:
        if self._failures is None:  # no one to tell: fail loudly rather than skip silently
            raise RuntimeError(f"{fault.error}; {fault.fix}")
        self._failures.event_failed(event, fault, attempts)

    def _correction(self, event: useq.MDAEvent) -> float:
        """The offset a hardware-autofocus event found at this position (pymmcore-plus keeps it
        on the engine; absent, nothing to correct)."""
        return getattr(self, "_z_correction", {}).get(event.index.get("p"), 0.0)

    def _admit(self, event: useq.MDAEvent) -> DeviceFault | None:
        if self._guard is None:
            return None
        return self._guarded(self._guard.before_exposure, event)

    def _guarded(self, check: Callable[..., object], *args: Any) -> DeviceFault | None:
        try:
            check(*args)
        except EnvelopeViolation as exc:
            return DeviceFault("setup", None, f"refused by the safety envelope: {exc}", _AGAIN)
        return None

    def _locked(
        self, event: useq.MDAEvent, payloads: Iterable[PImagePayload | None]
    ) -> Iterator[Any]:
        with self._hardware_lock:
            if isinstance(event.action, useq.AcquireImage | None):
                refused = self._admit(event)
                if refused is not None:  # told under the lock: check and exposure stay one step
                    self._failed(event, refused, 1)
                    return
            if isinstance(payloads, Generator):
                yield from payloads  # keeps the runner's pause/cancel sends reaching the engine
            else:
                for payload in payloads:  # noqa: UP028 - a plain loop ignores the runner's sends
                    yield payload


def _plain(event: useq.MDAEvent) -> bool:
    """A single event this engine sets up itself (sequenced, SLM and ROI events are left to
    pymmcore-plus)."""
    return type(event) is useq.MDAEvent and event.slm_image is None and event.roi is None


def _device_fault(
    doing: str,
    device: str | None,
    exc: Exception,
    check: str = _DEVICE,
    step: Literal["setup", "snap"] = "setup",
) -> DeviceFault:
    what = f"device {device!r}" if device else "the devices"
    return DeviceFault(
        step, device, f"{doing} failed: {exc}", f"check {what} ({check}), then {_AGAIN}"
    )


def _config_devices(core: CMMCorePlus, group: str, config: str) -> str | None:
    try:
        devices = sorted({setting[0] for setting in core.getConfigData(group, config)})
    except Exception:
        return None
    return ", ".join(devices) or None
