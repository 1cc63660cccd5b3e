"""Start the edge agent service: microscope core, agent, HTTP API and fast frame stream."""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import sys
from pathlib import Path

import uvicorn
from pymmcore_plus import CMMCorePlus

from scopeflow import (
    ConfigurationError,
    EdgeMicroscopeSettings,
    EdgeServeRequest,
    EdgeServerSettings,
)

from ._agent import EdgeAgent, SampleTruth
from ._app import create_app
from ._envelope import SafetyEnvelope, load_envelope
from ._stream_server import FrameStreamServer

__all__ = ["EdgeServiceOptions", "read_or_create_token", "serve_edge"]

log = logging.getLogger(__name__)


EdgeServiceOptions = EdgeMicroscopeSettings  # its former name, kept for existing callers


def read_or_create_token(path: Path) -> str:
    """The token in ``path``; a new random one written there (mode 0600) when it does not exist."""
    if path.exists():
        token = path.read_text().strip()
        if not token:
            raise ConfigurationError(
                f"token file {path} is empty: write a token into it or delete it"
            )
        return token
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


def build_core(
    microscope: EdgeMicroscopeSettings,
) -> tuple[CMMCorePlus, SampleTruth | None, SafetyEnvelope]:
    """The microscope core: the simulator, or a real Micro-Manager configuration."""
    from .sim import SimulatorConfig, build_simulated_core, load_micromanager_core

    if microscope.mm_config is not None:
        return load_micromanager_core(microscope.mm_config), None, SafetyEnvelope()
    if not microscope.simulate:
        raise ConfigurationError(
            "no microscope given: pass --simulate for the simulated microscope or "
            "--mm-config FILE for a Micro-Manager configuration"
        )
    config = SimulatorConfig(
        seed=microscope.seed,
        width=microscope.camera_width,
        height=microscope.camera_height,
        time_scale=microscope.time_scale,
        **({"nuclei_per_mm2": microscope.nuclei_per_mm2} if microscope.nuclei_per_mm2 else {}),
    )
    core, simulation = build_simulated_core(config)

    def truth(region: tuple[float, float, float, float] | None, t_s: float | None) -> dict:
        t = simulation.clock.now() if t_s is None else t_s
        return {"t_s": t, "cells": simulation.truth(region=region, t_s=t).to_records()}

    envelope = SafetyEnvelope(
        x_limits_um=(0.0, config.slide_width_um), y_limits_um=(0.0, config.slide_height_um)
    )

    def faults(snap: int, stage: int, clear: bool, hang: int = 0) -> dict[str, int]:
        if clear:
            simulation.clear_faults()
        return simulation.inject_faults(snap=snap, stage=stage, hang=hang)

    return core, SampleTruth(truth, simulation.clock.now, faults), envelope


def serve_edge(
    request: EdgeServeRequest | EdgeServerSettings,
    microscope: EdgeMicroscopeSettings | None = None,
) -> None:
    """Run the edge agent until interrupted. Prints one JSON 'ready' line on stdout.

    ``request`` is what `scopeflow edge serve` builds; ``serve_edge(settings, microscope)``
    (the service settings and the microscope apart) does the same.
    """
    if isinstance(request, EdgeServerSettings):
        request = EdgeServeRequest(
            service=request, microscope=microscope or EdgeMicroscopeSettings()
        )
    elif microscope is not None:
        raise TypeError("serve_edge: the request already names its microscope")
    settings = request.service
    logging.getLogger("pymmcore-plus").setLevel(logging.WARNING)  # it logs every event
    core, truth, default_envelope = build_core(request.microscope)
    envelope = load_envelope(settings.envelope_file) if settings.envelope_file else default_envelope
    token_file = settings.token_file or settings.data_dir / "edge.token"
    token = read_or_create_token(token_file)

    listener = socket.create_server((settings.host, settings.port))
    agent = EdgeAgent(core, settings, envelope, simulated=truth is not None, truth=truth)
    stream = FrameStreamServer(
        agent.hub,
        token,
        settings.host,
        settings.stream_port,
        ring=agent.ring,
        commands=agent.command,
    )
    app = create_app(agent, token, stream_port=stream.port)
    agent.start()
    stream.start()
    host, port = listener.getsockname()[:2]
    ready = {
        "event": "ready",
        "url": f"http://{host}:{port}",
        "stream_port": stream.port,
        "token_file": str(token_file),
        "journal": str(agent.journal.root),
    }
    print(json.dumps(ready), flush=True)
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="off",
        ws_per_message_deflate=False,  # deflating 8 MiB of noisy pixels costs ~1 s a frame
        ws_max_size=2**20,
    )
    server = uvicorn.Server(config)
    # uvicorn shuts down on SIGINT and SIGTERM, then raises the signal again; SIGTERM's default
    # action would end the process there, before the journal, the ring and the core are closed
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.run(sockets=[listener])
    finally:
        stream.close()
        agent.shutdown()
        # a core left to interpreter shutdown aborts in its C++ destructor (exit code 134)
        core.unloadAllDevices()
        signal.signal(signal.SIGTERM, previous)
        print(json.dumps({"event": "stopped", "frames": agent.hub.count}), file=sys.stderr)


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM stops the edge like Ctrl-C: a clean shutdown, exit code 0."""
    raise KeyboardInterrupt
