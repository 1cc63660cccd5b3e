"""Unknown fields at every depth of a useq request are refused (useq-schema ignores them): with
their path and the closest known name, 422 on a real edge. Property tests: every valid useq
sequence is accepted unchanged (its sparse and its full dump), and an unknown key put at any
model's place of one is refused at that place."""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import useq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from scopeflow import SubmitEvents, SubmitSequence
from tasks.hardware import EdgeProcess

from .test_plan_cost import sequences

settings.register_profile(
    "strict-derandomized",
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
settings.register_profile(
    "strict-random", deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
PROFILE = settings.get_profile(
    f"strict-{os.environ.get('SCOPEFLOW_HYPOTHESIS_PROFILE', 'derandomized')}"
)

FREE_FORM = frozenset({"metadata", "index", "properties", "data"})  # dicts of any keys


def _all_field_names() -> frozenset[str]:
    names: set[str] = {"row", "col"}
    for name in dir(useq):
        kind = getattr(useq, name)
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            names.update(kind.model_fields)
            names.update(f.alias for f in kind.model_fields.values() if f.alias)
    return frozenset(names)


KNOWN = _all_field_names()
unknown_keys = st.from_regex(r"\A[a-z][a-z_]{2,10}\Z").filter(lambda k: k not in KNOWN)


def _valid(data: dict[str, Any]) -> useq.MDASequence | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return useq.MDASequence.model_validate(data)
        except ValidationError:
            return None


def _model_places(data: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple]:
    """Paths of the mappings in ``data`` that are models (not free-form dicts)."""
    if isinstance(data, dict):
        yield path
        for key, value in data.items():
            if key not in FREE_FORM:
                yield from _model_places(value, (*path, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _model_places(value, (*path, i))


def _at(data: Any, path: tuple) -> Any:
    for part in path:
        data = data[part]
    return data


def _absolute_well_points(data: dict[str, Any]) -> bool:
    """A plate whose points per well are an absolute plan (edges, polygon): useq takes only
    relative ones there and silently reads such a plan as one point (refused, see below)."""
    plan = data.get("stage_positions")
    points = plan.get("well_points_plan", {}) if isinstance(plan, dict) else {}
    return "vertices" in points or "top" in points


def _random_traversal(sequence: useq.MDASequence) -> bool:
    """A points plan visited in useq's ``random`` order (numpy's global, unseeded generator)."""
    return '"order":"random"' in sequence.model_dump_json()


def _axes(events: list[useq.MDAEvent]) -> list[list[str]]:
    """Which axes each event indexes: what a shuffled points plan leaves in place."""
    return [sorted(str(k) for k in e.index) for e in events]


@settings(PROFILE, max_examples=200)
@given(data=sequences.filter(lambda d: not _absolute_well_points(d)))
def test_valid_sequences_are_accepted_unchanged(data: dict[str, Any]) -> None:
    """What SubmitSequence reads is what useq reads, for the sequence as written, its sparse
    dump and its full dump (every field named)."""
    sequence = _valid(data)
    if sequence is None:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for dump in (
            data,
            sequence.model_dump(mode="json", exclude_unset=True),
            sequence.model_dump(mode="json"),
        ):
            request = SubmitSequence.model_validate({"command_id": "c", "sequence": dump})
            # (useq's own full dump is not always itself again: selected_wells null selects
            # no well where the unset field meant all of them)
            expected = useq.MDASequence.model_validate(dump)
            assert request.sequence == expected
            ours = list(itertools.islice(request.sequence, 50))
            theirs = list(itertools.islice(expected, 50))
            if _random_traversal(expected):  # useq shuffles these points unseeded, each pass
                assert _axes(ours) == _axes(theirs)  # (the models are equal, above)
            else:
                assert ours == theirs


@settings(PROFILE, max_examples=300)
@given(data=sequences, choice=st.integers(min_value=0), key=unknown_keys)
def test_an_unknown_key_anywhere_is_refused_at_its_place(
    data: dict[str, Any], choice: int, key: str
) -> None:
    if _valid(data) is None:
        return
    places = list(_model_places(data))
    place = places[choice % len(places)]
    _at(data, place)[key] = 1
    with warnings.catch_warnings(), pytest.raises(ValidationError) as refused:
        warnings.simplefilter("ignore")
        SubmitSequence.model_validate({"command_id": "c", "sequence": data})
    errors = refused.value.errors()
    mine = [e for e in errors if e["type"] == "unknown_field"]
    if mine:  # refused by the strict check, at the place of the key
        assert any(tuple(e["loc"]) == ("sequence", *place, key) for e in mine), errors
        assert all("useq-schema" in e["msg"] for e in mine)
    else:  # or useq itself refused it: the key made it read another model that does not fit
        assert errors


@pytest.mark.parametrize(
    ("sequence", "loc", "says"),
    [
        ({"z_plan": {"range": 4, "step": 1, "go_upp": True}}, ["z_plan", "go_upp"], "'go_up'"),
        ({"time_plan": {"interval": 1, "loops": 2, "loosp": 3}}, ["time_plan", "loosp"],
         "'loops'"),
        ({"grid_plan": {"rows": 2, "colums": 3}}, ["grid_plan", "colums"],
         "a GridRowsColumns): did you mean 'columns'? (useq-schema ignores unknown fields: it "
         "would have read this as a RelativePosition"),
        ({"channels": ["BF", {"config": "DAPI", "exposre": 5}]}, ["channels", 1, "exposre"],
         "'exposure'"),
        ({"stage_positions": [{"x": 1, "y": 2, "sequence": {"grid_plan": {
            "rows": 1, "columns": 2, "ovrelap": 5}}}]},
         ["stage_positions", 0, "sequence", "grid_plan", "ovrelap"], "'overlap'"),
        ({"stage_positions": [{"x": 1, "y": 2, "nmae": "a"}]}, ["stage_positions", 0, "nmae"],
         "'name'"),
        ({"stage_positions": {"plate": 96, "a1_center_xy": [0, 0], "well_points_plan": {
            "vertices": [[0, 0], [100, 0], [0, 100]]}}},
         ["stage_positions", "well_points_plan", "vertices"],
         "unknown field 'vertices' in sequence.stage_positions.well_points_plan: known "
         "fields there"),
    ],
)  # fmt: skip
def test_nested_typos_are_refused_with_the_path_and_the_closest_name(
    sequence: dict[str, Any], loc: list, says: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        SubmitSequence.model_validate({"command_id": "c", "sequence": sequence})
    (error,) = refused.value.errors()
    assert list(error["loc"]) == ["sequence", *loc]
    assert says in error["msg"]


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    data_dir = tmp_path_factory.mktemp("strict") / "edge"
    with EdgeProcess(data_dir, extra_args=["--camera-size", "32"]) as e:
        yield e


def test_the_edge_answers_422_with_the_place_and_the_fix(edge: EdgeProcess) -> None:
    headers = {"Authorization": f"Bearer {edge.token_file.read_text().strip()}"}
    with httpx.Client(base_url=edge.url, headers=headers, timeout=60) as http:
        body = {"command_id": "strict-1", "sequence": {"z_plan": {"range": 2, "step": 1,
                                                                  "go_upp": True}}}  # fmt: skip
        answer = http.post("/v1/sequences", json=body)
        assert answer.status_code == 422, answer.text
        (problem,) = answer.json()["detail"]
        assert problem["loc"] == ["body", "sequence", "z_plan", "go_upp"]
        assert "did you mean 'go_up'?" in problem["msg"]
        body = {"command_id": "strict-2", "events": [{"x_pos": 5000}, {"action": {
            "type": "hardware_autofocus", "autofocus_motor_ofset": 1}}]}  # fmt: skip
        answer = http.post("/v1/events", json=body)
        assert answer.status_code == 422, answer.text
        (problem,) = answer.json()["detail"]
        assert problem["loc"] == ["body", "events", 1, "action", "autofocus_motor_ofset"]
        assert "'autofocus_motor_offset'" in problem["msg"]
        assert http.get("/v1/state").json()["queue_depth"] == 0
        # the same, spelt right, is taken
        body["events"][1]["action"] = {"type": "hardware_autofocus"}
        body["command_id"] = "strict-3"
        assert http.post("/v1/events", json=body).status_code == 200


def test_events_with_nested_typos_are_refused_before_the_edge() -> None:
    with pytest.raises(ValidationError, match="did you mean 'max_retries'"):
        SubmitEvents.model_validate(
            {
                "command_id": "c",
                "events": [{"action": {"type": "hardware_autofocus", "max_retires": 3}}],
            }
        )
