"""The cost of a useq sequence before it is expanded (`scopeflow.plan_cost`): an upper bound of
its events for every kind of plan (property test against useq's own expansion), and the
layouts that take useq seconds refused before it starts them (the fuzzer's stalled
``POST /v1/sequences``: a plate of a million wells, 2,000 random points in two_opt order)."""

from __future__ import annotations

import itertools
import os
import warnings
from typing import Any

import pytest
import useq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from scopeflow import SubmitSequence, plan_cost

settings.register_profile(
    "plan-derandomized",
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("plan-random", deadline=None, database=None)
PROFILE = os.environ.get("SCOPEFLOW_HYPOTHESIS_PROFILE", "derandomized")

small = st.integers(min_value=1, max_value=3)
fov = st.sampled_from([None, 40.0, 100.0])
modes = st.sampled_from(["row_wise", "column_wise", "row_wise_snake", "spiral"])

grid_plans = st.one_of(
    st.builds(dict, rows=small, columns=small, mode=modes, fov_width=fov, fov_height=fov),
    st.builds(
        dict,
        top=st.floats(0, 300),
        left=st.floats(0, 300),
        bottom=st.floats(-300, 0),
        right=st.floats(300, 600),
        mode=modes,
        fov_width=st.sampled_from([60.0, 100.0]),
        fov_height=st.sampled_from([60.0, 100.0]),
        overlap=st.sampled_from([0.0, 10.0, 50.0]),
    ),
    st.builds(
        dict,
        width=st.floats(1, 400),
        height=st.floats(1, 400),
        mode=modes,
        fov_width=st.sampled_from([60.0, 100.0]),
        fov_height=st.sampled_from([60.0, 100.0]),
    ),
    st.builds(
        dict,
        vertices=st.sampled_from(
            [[[0, 0], [300, 0], [0, 300]], [[0, 0], [250, 0], [250, 120], [0, 120]]]
        ),
        fov_width=st.sampled_from([50.0, 100.0]),
        fov_height=st.sampled_from([50.0, 100.0]),
        mode=modes,
    ),
    st.builds(
        dict,
        num_points=st.integers(1, 12),
        max_width=st.floats(10, 500),
        max_height=st.floats(10, 500),
        random_seed=st.integers(0, 100),
        order=st.sampled_from([None, "nearest_neighbor", "two_opt", "random"]),
        allow_overlap=st.booleans(),
        fov_width=fov,
        fov_height=fov,
    ),
)


def _clean(plan: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in plan.items() if v is not None}


positions = st.lists(
    st.builds(
        dict,
        x=st.floats(0, 1000),
        y=st.floats(0, 1000),
        sequence=st.one_of(st.none(), st.builds(dict, grid_plan=grid_plans.map(_clean))),
    ).map(_clean),
    max_size=3,
)
plates = st.builds(
    dict,
    plate=st.sampled_from([6, {"rows": 2, "columns": 3, "well_spacing": 9, "well_size": 6}]),
    a1_center_xy=st.just([0.0, 0.0]),
    selected_wells=st.one_of(st.none(), st.just([[0, 1], [1, 2]]), st.just([[0], [0]])),
    well_points_plan=st.one_of(st.none(), grid_plans.map(_clean)),
).map(_clean)
sequences = st.builds(
    dict,
    time_plan=st.one_of(st.none(), st.builds(dict, interval=st.just(1), loops=small)),
    z_plan=st.one_of(st.none(), st.builds(dict, range=st.just(4.0), step=st.just(1.0))),
    channels=st.lists(st.sampled_from(["BF", "DAPI", "GFP"]), unique=True, max_size=3),
    grid_plan=st.one_of(st.none(), grid_plans.map(_clean)),
    stage_positions=st.one_of(positions, plates),
).map(_clean)


@settings(settings.get_profile(f"plan-{PROFILE}"), max_examples=200)
@given(data=sequences)
def test_the_cost_bounds_the_events_of_every_kind_of_plan(data: dict[str, Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # useq warns about overlapping random points
        try:
            sequence = useq.MDASequence.model_validate(data)
        except ValidationError:
            return  # a combination useq refuses (a global grid with sub-sequence grids)
        cost = plan_cost(sequence, max_steps=1e9)
        events = sum(1 for _ in itertools.islice(sequence, cost.events + 1))
    assert cost.events >= events
    assert cost.steps >= 0


@pytest.mark.parametrize(
    ("grid_plan", "costliest"),
    [
        ({"num_points": 2000, "max_width": 1e3, "max_height": 1e3}, "two_opt"),
        ({"num_points": 2000, "max_width": 1e5, "max_height": 1e5, "fov_width": 10,
          "fov_height": 10, "allow_overlap": False, "order": None}, "must not overlap"),
        ({"rows": 1, "columns": 3000, "mode": "spiral"}, "spiral"),
        ({"vertices": [[0, 0], [1000, 0], [0, 1000]], "fov_width": 1, "fov_height": 1},
         "polygon"),
    ],
)  # fmt: skip
def test_layouts_that_take_useq_seconds_are_counted_before_they_run(
    grid_plan: dict[str, Any], costliest: str
) -> None:
    sequence = useq.MDASequence(grid_plan=grid_plan)
    cost = plan_cost(sequence, max_steps=5e6)
    assert cost.steps > 5e6
    assert costliest in cost.worst


@pytest.mark.parametrize(
    ("stage_positions", "says"),
    [
        ({"plate": {"rows": 13598.0, "columns": 3355.0, "well_spacing": 1},
          "a1_center_xy": [0, 0]}, "13598 x 3355 cells"),
        ({"plate": {"rows": "2000", "columns": 2000, "well_spacing": 1},
          "a1_center_xy": [0, 0]}, "2000 x 2000 cells"),
        ({"plate": {"rows": 1000, "columns": 1000, "well_spacing": 1, "well_size": 0.5},
          "a1_center_xy": [0, 0]}, "lays out 1,000,000 positions"),
        ({"plate": 96, "a1_center_xy": [0, 0],
          "well_points_plan": {"num_points": 1000, "max_width": 1, "max_height": 1}},
         "96 wells x 1000 points"),
    ],
)  # fmt: skip
def test_plates_useq_would_lay_out_for_a_minute_are_refused_at_validation(
    stage_positions: dict[str, Any], says: str
) -> None:
    """useq lays a plate's positions out while it validates the sequence (~100 µs each), so
    these are refused before it does, whatever the edge's limit on events."""
    with pytest.raises(ValidationError, match=says):
        SubmitSequence.model_validate({"command_id": "c", "sequence": {"stage_positions": (
            stage_positions)}})  # fmt: skip


def test_a_plate_with_a_few_wells_selected_is_accepted() -> None:
    request = SubmitSequence.model_validate(
        {
            "command_id": "c",
            "sequence": {
                "stage_positions": {
                    "plate": 96,
                    "a1_center_xy": [0, 0],
                    "selected_wells": [[0, 1], [2, 3]],
                    "well_points_plan": {"rows": 2, "columns": 2},
                }
            },
        }
    )
    cost = plan_cost(request.sequence, max_steps=5e6)
    assert cost.events == 8 == len(list(request.sequence))
