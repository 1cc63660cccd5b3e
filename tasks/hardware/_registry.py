"""Several edges by microscope name: the registry in the settings (``[microscopes.NAME]`` with
``url``, ``token_file`` or ``token``, ``ca_file``) turned into an edge address."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scopeflow import ConfigurationError, ScopeflowSettings, load_settings

__all__ = ["EdgeAddress", "microscope_address"]


@dataclass(frozen=True)
class EdgeAddress:
    """Where the edge agent is, the token it wants and the CA that signed its certificate."""

    url: str
    token: str
    ca_file: Path | None = None


def microscope_address(name: str, settings: ScopeflowSettings | None = None) -> EdgeAddress:
    """The edge of microscope ``name`` from the settings' registry; `ConfigurationError`
    naming the known microscopes and how to register one when it is not there."""
    settings = settings or load_settings()
    entry = settings.microscopes.get(name)
    if entry is None:
        known = ", ".join(sorted(settings.microscopes)) or "none registered"
        raise ConfigurationError(
            f"no microscope {name!r} in the settings ({known}); register it in scopeflow.toml: "
            f'[microscopes.{name}] url = "https://scope-pc:8765", token_file = "...", '
            'ca_file = "..." (or SCOPEFLOW_MICROSCOPES as JSON)'
        )
    if entry.token is not None:
        token = entry.token.get_secret_value()
    elif entry.token_file is not None:
        try:
            token = entry.token_file.read_text().strip()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read the token file {entry.token_file} of microscope {name!r}: "
                f"{exc.strerror or exc}; fix token_file in [microscopes.{name}]"
            ) from exc
        if not token:
            raise ConfigurationError(
                f"the token file {entry.token_file} of microscope {name!r} is empty; put your "
                "token there (`scopeflow edge user add` prints one)"
            )
    else:
        raise ConfigurationError(
            f"microscope {name!r} has no token: set token_file in [microscopes.{name}]"
        )
    return EdgeAddress(entry.url, token, entry.ca_file)
