"""Photodamage in the simulator: a cell given too much light stops dividing; off by default."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.hardware.sim import SimulatorConfig, VirtualSample

REGION = (4_000.0, 4_000.0, 6_000.0, 6_000.0)
LIMITS = {"DAPI": 1_000.0, "GFP": 2_000.0}


def _next_divisions(sample: VirtualSample, count: int) -> list:
    divisions = sample.divisions(0.0, 3 * 3600.0, REGION)
    assert len(divisions) >= count
    return divisions[:count]


def test_a_cell_over_its_light_limit_never_divides_and_one_under_it_does() -> None:
    config = SimulatorConfig(seed=3, photodamage_dose=LIMITS)
    future = _next_divisions(VirtualSample(config.model_copy(update={"photodamage_dose": None})), 2)
    sample = VirtualSample(config)
    lit, spared = future[0].parent_id, future[1].parent_id
    sample.cells_at(0.0, REGION)  # the cells exist
    sample.add_dose_to(np.array([lit]), "DAPI", 600.0)
    sample.add_dose_to(np.array([lit]), "GFP", 900.0)  # 0.6 + 0.45 >= 1: arrested
    sample.add_dose_to(np.array([spared]), "DAPI", 900.0)  # 0.9 < 1: divides
    end = max(d.time_s for d in future) + 60.0
    parents = {d.parent_id for d in sample.divisions(0.0, end, REGION)}
    assert spared in parents and lit not in parents
    after = sample.cells_at(end, REGION)
    k = np.flatnonzero(after.ids == lit)
    assert k.size == 1 and after.phase[k[0]] == 0  # alive, back in interphase
    assert not (after.parent_ids == lit).any()


def test_photodamage_is_off_by_default_and_every_division_happens() -> None:
    config = SimulatorConfig(seed=3)
    assert config.photodamage_dose is None
    base = _next_divisions(VirtualSample(config), 2)
    sample = VirtualSample(config)
    sample.cells_at(0.0, REGION)
    sample.add_dose_to(np.array([base[0].parent_id]), "DAPI", 1e6)
    end = max(d.time_s for d in base) + 60.0
    assert [d.parent_id for d in sample.divisions(0.0, end, REGION)][:2] == [
        d.parent_id for d in base
    ]


def test_a_bad_photodamage_limit_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="positive dose"):
        SimulatorConfig(photodamage_dose={"DAPI": 0.0})
    with pytest.raises(ValueError, match="per channel of"):
        SimulatorConfig(photodamage_dose={"BF": 10.0})
