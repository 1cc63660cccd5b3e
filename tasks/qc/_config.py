"""QC thresholds: per metric, which side is bad, how far from the run's own baseline (robust
sigmas) is a warning or a failure, and absolute limits; loadable from a TOML or YAML file."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from scopeflow import ConfigurationError

__all__ = ["DEFAULT_RULES", "AlertLevel", "MetricRule", "QCConfig"]

AlertLevel = Literal["warn", "fail"]


class MetricRule(BaseModel):
    """How one metric is judged. Learned limits: ``baseline ± z * spread`` on the ``bad``
    side(s), where the baseline is the median of the run's recent good images and the spread
    1.4826 MAD (at least ``min_spread``, on the log10 scale when ``log``). Absolute limits
    (``warn_below`` ... ``fail_above``) apply from the first image on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bad: Literal["low", "high", "both"]
    learned: bool = True
    log: bool = False
    warn_z: float = Field(5.0, gt=0)
    fail_z: float = Field(7.0, gt=0)
    min_spread: float = Field(0.0, ge=0)
    warn_below: float | None = None
    fail_below: float | None = None
    warn_above: float | None = None
    fail_above: float | None = None


DEFAULT_RULES: dict[str, MetricRule] = {
    "focus": MetricRule(bad="low", log=True, min_spread=0.05),
    "astigmatism": MetricRule(bad="high", log=True, min_spread=0.03, warn_above=3.0),
    "snr_db": MetricRule(bad="low", warn_z=4.0, fail_z=5.0, min_spread=0.3),
    "noise": MetricRule(bad="high", log=True, warn_z=5.0, fail_z=7.0, min_spread=0.01),
    "brightness": MetricRule(bad="both", warn_z=4.0, fail_z=5.0, min_spread=4.0),
    "contrast": MetricRule(bad="both", warn_z=4.0, fail_z=5.0, min_spread=3.0),
    "saturated": MetricRule(bad="high", learned=False, warn_above=0.002, fail_above=0.01),
    "streak_z": MetricRule(bad="high", min_spread=0.3, warn_above=12.0, fail_above=20.0),
    "line_z": MetricRule(bad="high", warn_z=4.5, fail_z=5.5, min_spread=0.5, fail_above=9.0),
    "drift_px": MetricRule(bad="high", learned=False, warn_above=3.0, fail_above=6.0),
    "overlap_ncc": MetricRule(bad="low", min_spread=0.03),
}


class QCConfig(BaseModel):
    """``learn_images``: the first N readable images whose metrics make the baseline (their
    own verdicts are provisional until then, and revised once it exists); later images that
    pass join a rolling ``history``. ``alert_level``: the level that counts as an anomaly
    (fires ``on_anomaly``). ``rules`` override the defaults per metric."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    learn_images: int = Field(16, ge=3)
    history: int = Field(60, ge=3)
    alert_level: AlertLevel = "fail"
    rules: dict[str, MetricRule] = Field(default_factory=lambda: dict(DEFAULT_RULES))

    @classmethod
    def light_microscopy(cls, **overrides: object) -> QCConfig:
        """Rules for a light microscope's frames (a live flow's edge stream): the SEM scan's
        absolute limits (streaks, line jumps, astigmatism) dropped, the run's own baseline
        kept. Pair it with ``MetricsRequest(focus_band=(0.07, 0.18), low_band=(0.01, 0.05))``."""
        rules = dict(DEFAULT_RULES)
        for metric in ("streak_z", "line_z", "astigmatism"):
            rules[metric] = rules[metric].model_copy(
                update={"warn_above": None, "fail_above": None}
            )
        return cls(rules=rules, **overrides)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: Path) -> QCConfig:
        """From a ``.toml``, ``.yaml``/``.yml`` or ``.json`` file; rules given there replace
        the defaults of those metrics only."""
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigurationError(f"cannot read QC config {path}: {exc}") from exc
        try:
            data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text) or {}
        except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
            raise ConfigurationError(f"QC config {path} is not valid TOML/YAML: {exc}") from exc
        rules = dict(DEFAULT_RULES)
        rules.update(data.pop("rules", {}) or {})
        try:
            return cls(rules=rules, **data)
        except ValueError as exc:
            raise ConfigurationError(
                f"QC config {path}: {exc}; see tasks.qc.QCConfig for the fields"
            ) from exc
