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
from ._gate import EdgeGate
from ._lease import LeaseManager
from ._stream_server import FrameStreamServer
from ._tls import check_plaintext_allowed, server_context

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
    microscope: EdgeMicroscopeSettings, service: EdgeServerSettings | None = None
) -> tuple[CMMCorePlus, SampleTruth | None, SafetyEnvelope]:
    """The microscope core: the simulator, a real Micro-Manager configuration, or a vendor
    macro over the file-drop protocol."""
    from .sim import (
        FocusDrift,
        SimulatorConfig,
        add_external_devices,
        build_simulated_core,
        load_micromanager_core,
    )

    if microscope.driver == "file-drop":
        return _filedrop_core(microscope, service or EdgeServerSettings())
    if microscope.mm_config is not None:
        return load_micromanager_core(microscope.mm_config), None, SafetyEnvelope()
    if not microscope.simulate:
        raise ConfigurationError(
            "no microscope given: pass --simulate for the simulated microscope or "
            "--mm-config FILE for a Micro-Manager configuration"
        )
    config = SimulatorConfig(
        **_sim_config_file(microscope.sim_config),
        seed=microscope.seed,
        width=microscope.camera_width,
        height=microscope.camera_height,
        time_scale=microscope.time_scale,
        **({"nuclei_per_mm2": microscope.nuclei_per_mm2} if microscope.nuclei_per_mm2 else {}),
        **_plate_options(microscope),
        **({"focus_drift": FocusDrift()} if microscope.focus_drift else {}),
    )
    core, simulation = build_simulated_core(config)
    devices = add_external_devices(core, simulation)  # a pump and a DMD; the envelope allows

    def truth(region: tuple[float, float, float, float] | None, t_s: float | None) -> dict:
        t = simulation.clock.now() if t_s is None else t_s
        x0, y0, x1, y1 = region or (0.0, 0.0, config.slide_width_um, config.slide_height_um)
        focus = float(simulation.sample.focus_z_um(t, (x0 + x1) / 2, (y0 + y1) / 2))
        return {
            "t_s": t,
            "cells": simulation.truth(region=region, t_s=t).to_records(),
            "devices": devices.truth(t),
            "focus_z_um": focus,
        }

    envelope = SafetyEnvelope(
        x_limits_um=(0.0, config.slide_width_um), y_limits_um=(0.0, config.slide_height_um)
    )

    def faults(snap: int, stage: int, clear: bool, hang: int = 0) -> dict[str, int]:
        if clear:
            simulation.clear_faults()
        return simulation.inject_faults(snap=snap, stage=stage, hang=hang)

    sample_truth = SampleTruth(truth, simulation.clock.now, faults, simulation.clock.time_scale)
    return core, sample_truth, envelope


_OPTION_FIELDS = {
    "seed": "--seed",
    "width": "--camera-size",
    "height": "--camera-size",
    "time_scale": "--time-scale",
    "nuclei_per_mm2": "--density",
    "plate": "--plate",
    "plate_rotation_deg": "--plate-rotation",
    "focus_drift": "--focus-drift",
}


def _sim_config_file(path: Path | None) -> dict[str, object]:
    """Further simulator settings from a YAML file; a field an option sets is refused."""
    if path is None:
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"simulator config {path} cannot be read: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigurationError(
            f"simulator config {path} must be a mapping of SimulatorConfig fields, not "
            f"{type(data).__name__}"
        )
    if clash := sorted(set(data) & set(_OPTION_FIELDS)):
        options = ", ".join(sorted({_OPTION_FIELDS[k] for k in clash}))
        raise ConfigurationError(
            f"simulator config {path} sets {clash}: give them as {options} instead"
        )
    from pydantic import ValidationError

    from .sim import SimulatorConfig

    try:
        SimulatorConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigurationError(f"simulator config {path}: {exc}") from exc
    return data


def _plate_options(microscope: EdgeMicroscopeSettings) -> dict[str, object]:
    """The simulated plate, checked here so that an unknown type is a clear error."""
    if microscope.plate is None:
        return {}
    import useq

    known = sorted(useq.registered_well_plate_keys())
    if microscope.plate not in known:
        raise ConfigurationError(
            f"unknown plate type {microscope.plate!r}; known types: {', '.join(known)}"
        )
    return {"plate": microscope.plate, "plate_rotation_deg": microscope.plate_rotation_deg}


def _filedrop_core(
    microscope: EdgeMicroscopeSettings, service: EdgeServerSettings
) -> tuple[CMMCorePlus, SampleTruth | None, SafetyEnvelope]:
    from ._filedrop_core import build_filedrop_core, filedrop_envelope

    if microscope.drop_dir is None:
        raise ConfigurationError("--driver file-drop needs --drop-dir: the folder the macro uses")
    core, hello = build_filedrop_core(
        microscope.drop_dir,
        service,
        reply_timeout_s=microscope.drop_reply_timeout_s,
    )
    log.info("file-drop microscope %r in %s", hello.name, microscope.drop_dir)
    return core, None, filedrop_envelope(hello)


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
    if request.microscope.mm_config is not None and settings.envelope_file is None:
        raise ConfigurationError(
            "a real microscope (--mm-config) needs its own safety envelope: the simulator's "
            "limits say nothing about this stage, its objectives or its light sources; write "
            "one (stage limits, allowed channels with their power at the sample, exposure and "
            "dose budget; see SafetyEnvelope) and pass it with --envelope FILE"
        )
    logging.getLogger("pymmcore-plus").setLevel(logging.WARNING)  # it logs every event
    tls = settings.tls_cert is not None or settings.tls_key is not None
    check_plaintext_allowed(settings.host, tls=tls, insecure=settings.insecure)
    if tls and (settings.tls_cert is None or settings.tls_key is None):
        raise ConfigurationError("TLS needs both --tls-cert and --tls-key (PEM files)")
    tls_context = (
        server_context(settings.tls_cert, settings.tls_key)  # type: ignore[arg-type]
        if tls
        else None
    )
    core, truth, default_envelope = build_core(request.microscope, settings)
    envelope = load_envelope(settings.envelope_file) if settings.envelope_file else default_envelope
    token_file = settings.token_file or settings.data_dir / "edge.token"
    read_or_create_token(token_file)
    users_file = settings.users_file or settings.data_dir / "users.json"
    audit_file = settings.audit_file or settings.data_dir / "audit.jsonl"
    gate = EdgeGate.for_edge(
        users_file,
        token_file,
        audit_file,
        require_lease=settings.require_lease,
        lease_file=settings.data_dir / LeaseManager.FILE,
    )

    listener = socket.create_server((settings.host, settings.port))
    agent = EdgeAgent(core, settings, envelope, simulated=truth is not None, truth=truth)
    stream = FrameStreamServer(
        agent.hub,
        gate,
        settings.host,
        settings.stream_port,
        ring=agent.ring,
        commands=agent.command,
        tls=tls_context,
    )
    app = create_app(agent, gate, stream_port=stream.port)
    agent.start()
    stream.start()
    host, port = listener.getsockname()[:2]
    ready = {
        "event": "ready",
        "url": f"{'https' if tls else 'http'}://{_url_host(host)}:{port}",
        "stream_port": stream.port,
        "token_file": str(token_file),
        "journal": str(agent.journal.root),
        "tls": tls,
        "users_file": str(users_file),
        "audit_file": str(audit_file),
    }
    print(json.dumps(ready), flush=True)
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="off",
        ws_per_message_deflate=False,  # deflating 8 MiB of noisy pixels costs ~1 s a frame
        ws_max_size=2**20,
        ssl_certfile=settings.tls_cert if tls else None,
        ssl_keyfile=settings.tls_key if tls else None,
        limit_concurrency=settings.limits.max_connections,
        timeout_keep_alive=settings.limits.keep_alive_s,
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
        gate.close()
        # a core left to interpreter shutdown aborts in its C++ destructor (exit code 134)
        core.unloadAllDevices()
        signal.signal(signal.SIGTERM, previous)
        print(json.dumps({"event": "stopped", "frames": agent.hub.count}), file=sys.stderr)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM stops the edge like Ctrl-C: a clean shutdown, exit code 0."""
    raise KeyboardInterrupt
