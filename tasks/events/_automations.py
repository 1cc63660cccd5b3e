"""Apply ``deployments/automations.yaml`` to a Prefect server: the notification block, then each
automation (an automation of the same name is replaced, so applying twice changes nothing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scopeflow import ConfigurationError

__all__ = ["AutomationsFile", "apply_automations", "load_automations"]


class AutomationsFile(BaseModel):
    """The file's shape: a block name and Prefect automations (``send-notification`` actions
    name no block: the file's block is used)."""

    model_config = ConfigDict(extra="forbid")

    notification_block: str = Field(min_length=1)
    automations: list[dict[str, Any]] = Field(min_length=1)


def load_automations(path: Path) -> AutomationsFile:
    try:
        return AutomationsFile.model_validate(yaml.safe_load(path.read_text()))
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise ConfigurationError(
            f"cannot load automations from {path}: {exc}; see deployments/automations.yaml"
        ) from exc


def apply_automations(path: Path, webhook_url: str) -> dict[str, Any]:
    """Create or update the webhook block (``webhook_url`` gets a JSON POST with subject and
    body) and replace the file's automations; returns their names and ids."""
    from prefect.automations import Automation
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    spec = load_automations(path)
    block = CustomWebhookNotificationBlock(
        name=spec.notification_block,
        url=webhook_url,
        method="POST",
        json_data={"subject": "{{subject}}", "body": "{{body}}", "name": "{{name}}"},
    )
    block_id = block.save(spec.notification_block, overwrite=True)
    applied = {}
    for raw in spec.automations:
        actions = [
            {**a, "block_document_id": str(block_id)} if a.get("type") == "send-notification" else a
            for a in raw.get("actions", [])
        ]
        try:
            automation = Automation.model_validate({**raw, "actions": actions})
        except ValidationError as exc:
            raise ConfigurationError(
                f"automation {raw.get('name')!r} in {path} is invalid: {exc}"
            ) from exc
        _delete_named(automation.name)
        applied[automation.name] = str(automation.create().id)
    return {"block": spec.notification_block, "block_id": str(block_id), "automations": applied}


def _delete_named(name: str) -> None:
    from prefect.automations import Automation

    try:
        existing = Automation.read(name=name)
    except ValueError:  # none of that name
        return
    existing.delete()
