"""The automations file and the event names, without a server (tests/test_automations.py applies
them to a real one)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

from scopeflow import ConfigurationError
from tasks.events import QC_ANOMALY, load_automations

from .conftest import REPO


def test_every_automation_in_the_file_is_a_valid_prefect_automation() -> None:
    from prefect.automations import Automation

    spec = load_automations(REPO / "deployments" / "automations.yaml")
    block = str(uuid.uuid4())
    for raw in spec.automations:
        actions = [{**a, "block_document_id": block} for a in raw["actions"]]
        automation = Automation.model_validate({**raw, "actions": actions})
        assert automation.trigger.expect  # each reacts to named events
    expected = {e for a in spec.automations for e in a["trigger"]["expect"]}
    assert QC_ANOMALY in expected


@pytest.mark.parametrize(
    ("text", "why"),
    [("automations: [", "cannot load"), (yaml.safe_dump({"automations": []}), "notification")],
)
def test_a_broken_automations_file_is_refused_with_its_path(
    tmp_path: Path, text: str, why: str
) -> None:
    path = tmp_path / "automations.yaml"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=str(path)) as error:
        load_automations(path)
    assert why in str(error.value)
