"""Bayesian optimisation of acquisition settings with optuna's TPE sampler, as a pure function.

Why optuna (TPE) rather than Ax/BoTorch or bayesian-optimization: the search has a handful of
trials over two continuous log-scaled settings and one categorical one (binning). TPE handles
categorical and log-scaled parameters natively and proposes a point in milliseconds on a CPU;
optuna's ``add_trial`` rebuilds a study from a list of scored trials, so the sampler's whole
state is the trial history the policy already keeps: a resumed run proposes the same settings
and sends the same command ids (the edge repeats nothing). Ax/BoTorch fit a Gaussian process
with torch and gpytorch on every step (seconds on the edge PC's CPUs per proposal) and Ax keeps
its own experiment object to serialise; bayesian-optimization has no categorical parameters.

Determinism: trial ``number`` is proposed by a fresh study holding the scored trials (in trial
order) and a sampler seeded with ``(seed, number)``: the same history gives the same proposal,
while the random start-up trials still differ from one another.
"""

from __future__ import annotations

import warnings
from typing import Any

from ._acquisition_search import AcquisitionSettings, SearchSpace, Trial

__all__ = ["OptunaSuggester"]


class OptunaSuggester:
    """TPE over ``space``: ``startup`` random trials, then the model's proposals."""

    name = "optuna-tpe"

    def __init__(self, space: SearchSpace, *, seed: int = 0, startup: int = 8) -> None:
        if startup < 1:
            raise ValueError("startup must be at least 1 random trial")
        self.space = space
        self.seed = seed
        self.startup = startup

    def distributions(self) -> dict[str, Any]:
        from optuna.distributions import CategoricalDistribution, FloatDistribution

        out: dict[str, Any] = {
            "exposure_ms": FloatDistribution(*self.space.exposure_ms, log=True),
            "intensity_pct": FloatDistribution(*self.space.intensity_pct, log=True),
        }
        if len(self.space.binnings) > 1:
            out["binning"] = CategoricalDistribution(list(self.space.binnings))
        return out

    def suggest(self, history: tuple[Trial, ...], number: int) -> AcquisitionSettings | None:
        import optuna
        from optuna.exceptions import ExperimentalWarning

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        distributions = self.distributions()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(
                seed=self.seed * 1_000_003 + number,
                n_startup_trials=self.startup,
                multivariate=True,
            )
            study = optuna.create_study(direction="maximize", sampler=sampler)
            for t in sorted(history, key=lambda t: t.number):
                params: dict[str, Any] = {
                    "exposure_ms": _clip(t.settings.exposure_ms, self.space.exposure_ms),
                    "intensity_pct": _clip(t.settings.intensity_pct, self.space.intensity_pct),
                }
                if "binning" in distributions:
                    params["binning"] = t.settings.binning
                study.add_trial(
                    optuna.trial.create_trial(
                        params=params, distributions=distributions, value=t.score
                    )
                )
            trial = study.ask(distributions)
        p = trial.params
        return AcquisitionSettings(
            float(p["exposure_ms"]),
            float(p["intensity_pct"]),
            int(p.get("binning", self.space.binnings[0])),
        )


def _clip(value: float, limits: tuple[float, float]) -> float:
    return min(max(value, limits[0]), limits[1])
