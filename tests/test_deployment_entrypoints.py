"""Every deployment's entrypoint, loaded as a Prefect worker loads it, is the package's own flow.

A worker given ``flows/x.py:f`` executes the file as a fresh top-level module: its relative
imports then make second copies of ``flows``' modules (params classes that are not the
package's, objects Dask workers cannot unpickle). Entrypoints name modules (``flows.x:f``).
"""

from __future__ import annotations

import importlib

import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint

from .conftest import REPO


def _entrypoints() -> list[str]:
    document = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    return sorted({d["entrypoint"] for d in document["deployments"]})


@pytest.mark.parametrize("entrypoint", _entrypoints())
def test_an_entrypoint_loads_the_packages_own_flow(entrypoint: str) -> None:
    module_name, _, name = entrypoint.partition(":")
    assert not module_name.endswith(".py"), (
        f"{entrypoint}: name the module (flows.x:flow), not the file; a file entrypoint "
        "copies the package's modules in a worker"
    )
    loaded = load_flow_from_entrypoint(entrypoint)
    assert loaded is getattr(importlib.import_module(module_name), name)
