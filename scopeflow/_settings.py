"""One settings tree for every role.

Each field can be set in code, by an environment variable with the ``SCOPEFLOW_`` prefix
(nested fields use ``__``: ``SCOPEFLOW_EDGE__PORT=9000``), or in a TOML file named by
``SCOPEFLOW_CONFIG`` (default ``./scopeflow.toml`` when it exists). Precedence: code, environment,
TOML file, defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

__all__ = [
    "BUILTIN_COMPUTE_PROFILES",
    "ComputeProfile",
    "EdgeLimits",
    "EdgeMicroscopeSettings",
    "EdgeServeRequest",
    "EdgeServerSettings",
    "JobqueueComputeProfile",
    "LocalComputeProfile",
    "MicroscopeAddress",
    "OmeroSettings",
    "PbsComputeProfile",
    "RayComputeProfile",
    "ScopeflowSettings",
    "SlurmComputeProfile",
    "load_settings",
]


class EdgeLimits(BaseModel):
    """Bounds on the work one request or client can make the edge do (each refusal names the
    field to raise: ``SCOPEFLOW_EDGE__LIMITS__<FIELD>``)."""

    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest HTTP request body (413 above it)"
    )
    max_events_per_request: int = Field(
        100_000, ge=1, description="Events one submitted command may queue (a sequence's count)"
    )
    max_queued_events: int = Field(
        200_000, ge=1, description="Events the queue holds; a command that would pass it waits"
    )
    max_layout_steps: int = Field(
        5_000_000,
        ge=1000,
        description="Work useq may spend laying out a sequence's grids, random points and "
        "plates (~1 µs a step): a two_opt order of 2,000 points alone is ~28 million",
    )
    truth_horizon_s: float = Field(
        3600.0,
        gt=0,
        description="Simulator: /v1/truth answers up to this far ahead of the sample's clock",
    )
    max_truth_area_mm2: float = Field(
        100.0, gt=0, description="Simulator: largest region /v1/truth lists the cells of"
    )
    max_connections: int = Field(
        1000, ge=8, description="Open HTTP connections and requests (503 above it)"
    )
    keep_alive_s: float = Field(5.0, gt=0, description="Idle keep-alive connections close after")


class EdgeServerSettings(BaseModel):
    """Settings of the edge agent service (`scopeflow edge serve`)."""

    host: str = Field("127.0.0.1", description="Address to bind; 127.0.0.1 keeps it local")
    port: int = Field(8765, ge=0, le=65535, description="HTTP/WebSocket port (0 picks a free one)")
    stream_port: int = Field(
        0, ge=0, le=65535, description="Fast TCP frame-stream port (0 picks a free one)"
    )
    token_file: Path | None = Field(
        None, description="File holding the bearer token; generated under data_dir when unset"
    )
    data_dir: Path = Field(Path("scopeflow-data/edge"), description="Journal and command log root")
    envelope_file: Path | None = Field(
        None, description="Safety envelope (YAML or TOML); simulator defaults when unset"
    )
    journal_compression: Literal["none", "zstd", "lz4"] = Field(
        "none", description="Codec for journal chunks"
    )
    journal_prewrite: int = Field(
        2,
        ge=0,
        description="Chunk files pre-written ahead of the journal (page-cache warm-up); 0 = off",
    )
    journal_index_window: int = Field(
        4096,
        ge=1,
        description="Frames whose journal locations stay in memory; older ones are found in "
        "the journal's log (a few reads), so memory does not grow with a session's frames",
    )
    notice_window: int = Field(
        1024,
        ge=1,
        description="Recent notices kept in memory for streams; older ones are read back from "
        "the session's notices.jsonl",
    )
    ring_mib: int = Field(
        512, ge=16, description="Recent frames kept in memory for streaming; older come from disk"
    )
    shm_slots: int = Field(
        16, ge=0, description="Shared-memory ring slots for same-host consumers (0 turns it off)"
    )
    channel_group: str = Field("Channel", description="Micro-Manager config group of channels")
    objective_group: str = Field("Objective", description="Config group of objectives")
    intensity_property: tuple[str, str] = Field(
        ("Illumination", "Intensity"),
        description="(device, property) of the illumination intensity in percent",
    )
    # -- security and many users (README "Security and many users") --
    tls_cert: Path | None = Field(
        None, description="TLS certificate (PEM) for HTTP, WebSocket, frame stream and commands"
    )
    tls_key: Path | None = Field(None, description="Private key (PEM) of tls_cert")
    insecure: bool = Field(
        False,
        description="Allow plain text on a non-loopback address (tokens and frames readable "
        "on the network); without TLS only 127.0.0.1/::1 is served otherwise",
    )
    users_file: Path | None = Field(
        None,
        description="Users, roles and token hashes (`scopeflow edge user add`); "
        "<data_dir>/users.json when unset; reloaded when it changes",
    )
    audit_file: Path | None = Field(
        None,
        description="Audit log (JSON lines) of every control request; "
        "<data_dir>/audit.jsonl when unset",
    )
    require_lease: bool = Field(
        False,
        description="Refuse control requests (423) unless their sender holds the microscope's "
        "lease (POST /v1/lease)",
    )
    limits: EdgeLimits = Field(default_factory=EdgeLimits, description="Work per request")


class EdgeMicroscopeSettings(BaseModel):
    """The microscope `scopeflow edge serve` drives: the built-in simulator or a Micro-Manager
    configuration of a real one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    simulate: bool = Field(False, description="Drive the built-in simulated microscope")
    mm_config: Path | None = Field(
        None,
        description="Micro-Manager configuration file of a real microscope (wins over simulate)",
    )
    driver: Literal["mmcore", "file-drop"] = Field(
        "mmcore",
        description="mmcore: the simulator or a Micro-Manager configuration; file-drop: a vendor "
        "macro (ZEN OAD, NIS JOBS) playing the microscope through files in drop_dir",
    )
    drop_dir: Path | None = Field(None, description="file-drop: the folder shared with the macro")
    drop_reply_timeout_s: float = Field(
        60.0, gt=0, description="file-drop: how long the edge waits for the macro's reply"
    )
    seed: int = Field(0, description="Simulator seed")
    camera_width: int = Field(2048, description="Simulated camera width in pixels")
    camera_height: int = Field(2048, description="Simulated camera height in pixels")
    time_scale: float = Field(
        1.0, description="Simulated seconds per real second (cell motion, division)"
    )
    nuclei_per_mm2: float | None = Field(
        None, description="Simulated nuclei per mm²; the simulator's default (300) when unset"
    )
    plate: str | None = Field(
        None, description="Simulate a multi-well plate of this useq type (e.g. 96-well)"
    )
    plate_rotation_deg: float = Field(
        0.0, description="Rotation of the simulated plate on the stage, degrees anti-clockwise"
    )
    sim_config: Path | None = Field(
        None,
        description="YAML of further SimulatorConfig fields (e.g. brightness_sigma, "
        "bleach_half_dose) for the simulated microscope",
    )
    focus_drift: bool = Field(
        False,
        description="Simulate thermal focus drift (a few µm per hour, seeded; /v1/truth gives "
        "the in-focus z as focus_z_um)",
    )


class EdgeServeRequest(BaseModel):
    """Everything `scopeflow edge serve` was asked for: the service settings and the microscope."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    service: EdgeServerSettings = Field(default_factory=EdgeServerSettings)
    microscope: EdgeMicroscopeSettings = Field(default_factory=EdgeMicroscopeSettings)


class OmeroSettings(BaseSettings):
    """OMERO registration: ``scopeflow omero``, ``register_in_omero`` and the spill-and-drain spool.

    Besides ``[omero]`` in the TOML file and the nested ``SCOPEFLOW_OMERO__HOST`` form, every field
    reads a flat ``SCOPEFLOW_OMERO_<FIELD>`` variable (``SCOPEFLOW_OMERO_HOST``,
    ``SCOPEFLOW_OMERO_PASSWORD``, ...). The flat variables fill what code and the TOML file leave
    unset; pass an ``OmeroSettings(...)`` in code to override everything.
    """

    model_config = SettingsConfigDict(env_prefix="SCOPEFLOW_OMERO_", extra="forbid")

    host: str | None = Field(None, description="OMERO server host name; unset = no OMERO")
    port: int = Field(4064, ge=1, le=65535, description="OMERO (Glacier2) port; 4064 by default")
    username: str | None = Field(None, description="OMERO user name")
    password: SecretStr | None = Field(None, description="OMERO password (secret, never logged)")
    group: str | None = Field(
        None, description="OMERO group to work in; the default group if unset"
    )
    secure: bool = Field(
        True, description="Keep the session on SSL; False switches to the faster plain connection"
    )
    connect_timeout_s: float = Field(
        10.0, gt=0, description="Longest wait to reach the server and log in (all retries together)"
    )
    call_timeout_s: float = Field(
        120.0, gt=0, description="Longest silence of the server during one call (upload, query)"
    )
    spill_dir: Path = Field(
        Path("scopeflow-data/omero-spool"),
        description="Local folder where registrations wait while OMERO is slow or unreachable",
    )
    queue_max_items: int = Field(
        64, ge=1, description="Registrations held in memory by the drainer; the rest wait on disk"
    )
    queue_max_bytes: int = Field(
        1 << 20, ge=1024, description="Bytes of registrations held in memory; the rest wait on disk"
    )
    retry_initial_s: float = Field(1.0, gt=0, description="First wait after OMERO was unreachable")
    retry_max_s: float = Field(60.0, gt=0, description="Longest wait between retries (doubling)")


class MicroscopeAddress(BaseModel):
    """One microscope's edge in the registry (``[microscopes.NAME]`` in scopeflow.toml)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(..., description="The edge's URL, e.g. https://scope-1.facility:8765")
    token_file: Path | None = Field(None, description="File holding this user's token for it")
    token: SecretStr | None = Field(None, description="The token itself (prefer token_file)")
    ca_file: Path | None = Field(None, description="CA certificate that signed its TLS cert")


class ScopeflowSettings(BaseSettings):
    """The whole settings tree."""

    model_config = SettingsConfigDict(
        env_prefix="SCOPEFLOW_", env_nested_delimiter="__", extra="ignore"
    )

    edge_url: str = Field("http://127.0.0.1:8765", description="Edge agent URL used by clients")
    edge_token: str | None = Field(None, description="Bearer token for the edge agent (secret)")
    edge_token_file: Path | None = Field(None, description="File holding the edge token")
    edge_ca_file: Path | None = Field(
        None, description="CA certificate (PEM) that signed the edge's TLS certificate"
    )
    microscopes: dict[str, MicroscopeAddress] = Field(
        default_factory=dict,
        description="Edges by microscope name ([microscopes.NAME] url, token_file, ca_file); "
        "EdgeClient.for_microscope(NAME) and the flows' `microscope` parameter use them",
    )
    edge: EdgeServerSettings = Field(default_factory=EdgeServerSettings)
    omero: OmeroSettings = Field(default_factory=OmeroSettings)
    compute_profiles: dict[str, ComputeProfile] = Field(
        default_factory=dict,
        description="named compute profiles for batch flows (built-in: local, local-ray)",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = Path(os.environ.get("SCOPEFLOW_CONFIG", "scopeflow.toml"))
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_file),
        )


def load_settings(**overrides: object) -> ScopeflowSettings:
    """Read the settings tree (code overrides win over environment and TOML)."""
    return ScopeflowSettings(**overrides)  # type: ignore[arg-type]


# -- compute profiles: where batch flows run (tasks.compute turns a profile into a cluster) --


class LocalComputeProfile(BaseModel):
    """Workers on this machine: a Dask LocalCluster or a local Ray, bound to 127.0.0.1."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["local"] = "local"
    engine: Literal["dask", "ray"] = Field("dask", description="Dask LocalCluster or local Ray")
    workers: int = Field(2, ge=1, description="worker processes (Dask) or actors (Ray)")
    gpus_per_worker: float = Field(
        0.0, ge=0.0, description="GPUs per worker: Dask worker resource GPU, Ray num_gpus"
    )
    memory_per_worker: str | None = Field(
        None, description="Dask memory limit per worker, e.g. '4GiB' (None: no limit)"
    )


class JobqueueComputeProfile(BaseModel):
    """Dask workers started as batch jobs through dask-jobqueue (shared by SLURM and PBS)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    queue: str | None = Field(None, description="partition (SLURM) or queue (PBS)")
    account: str | None = Field(None, description="account / project charged for the jobs")
    jobs: int = Field(1, ge=1, description="batch jobs to submit")
    cores: int = Field(1, ge=1, description="cores per job")
    processes: int = Field(1, ge=1, description="Dask worker processes per job")
    memory: str = Field("4GiB", description="memory per job, e.g. '16GiB'")
    gpus: int = Field(0, ge=0, description="GPUs per job; each worker gets GPU=gpus/processes")
    walltime: str = Field("01:00:00", description="job time limit, HH:MM:SS")
    prologue: list[str] = Field(
        default_factory=list,
        description="shell lines run before the worker starts, e.g. 'module load cuda/12.4'",
    )
    job_extra_directives: list[str] = Field(
        default_factory=list, description="extra scheduler directives, e.g. '--constraint=a100'"
    )
    python: str | None = Field(
        None, description="python on the compute nodes (None: the one running scopeflow)"
    )
    interface: str | None = Field(
        None, description="network interface workers and scheduler use, e.g. 'ib0'"
    )
    host: str | None = Field(
        None, description="address the scheduler binds (e.g. 127.0.0.1 on a single node)"
    )
    log_directory: Path | None = Field(None, description="where job stdout/stderr go")
    local_directory: str | None = Field(None, description="node-local scratch, e.g. '$TMPDIR'")
    startup_timeout_s: float = Field(
        600.0, gt=0.0, description="seconds to wait for the first worker (queue time included)"
    )


class SlurmComputeProfile(JobqueueComputeProfile):
    """dask-jobqueue SLURMCluster: ``--gpus``, ``--account``, ``--partition``, walltime."""

    kind: Literal["slurm"] = "slurm"


class PbsComputeProfile(JobqueueComputeProfile):
    """dask-jobqueue PBSCluster; GPUs through ``resource_spec`` (e.g. ``ngpus``)."""

    kind: Literal["pbs"] = "pbs"
    resource_spec: str | None = Field(
        None, description="PBS -l select=... (default: from cores, memory and gpus)"
    )


class RayComputeProfile(BaseModel):
    """An existing Ray cluster (e.g. KubeRay): ``address`` is 'ray://host:10001' or 'host:6379'."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["ray"] = "ray"
    address: str = Field(..., min_length=1, description="Ray cluster address")
    workers: int = Field(2, ge=1, description="actors to start (each loads the model once)")
    cpus_per_worker: float = Field(1.0, gt=0.0, description="Ray num_cpus per actor")
    gpus_per_worker: float = Field(0.0, ge=0.0, description="Ray num_gpus per actor")
    connect_timeout_s: float = Field(30.0, gt=0.0, description="seconds to wait to connect")


ComputeProfile = Annotated[
    LocalComputeProfile | SlurmComputeProfile | PbsComputeProfile | RayComputeProfile,
    Field(discriminator="kind"),
]

BUILTIN_COMPUTE_PROFILES: dict[str, LocalComputeProfile] = {
    "local": LocalComputeProfile(engine="dask"),
    "local-ray": LocalComputeProfile(engine="ray"),
}

ScopeflowSettings.model_rebuild()
