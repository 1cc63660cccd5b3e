"""deployments/prefect.yaml deployed to a real Prefect server: deployments, the nightly schedule,
and the event trigger that segments every image a conversion finishes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from flows.convert import ConvertFolderParams, convert_folder

from ._prefect_server import PrefectServer
from .conftest import REPO, shared_data

DEPLOYMENTS = {
    "segment-dataset/segment-dataset-hpc",
    "restore-dataset/restore-dataset-hpc",
    "targeted-imaging/targeted-imaging-slide",
    "tracking/tracking-live-cells",
    "plate-screen/plate-screen-96",
    "acquire/acquire-mda-sequence",
    "track-dataset/track-dataset-hpc",
    "convert-folder/convert-inbox-nightly",
    "segment-dataset/segment-dataset-on-conversion",
    "targeted-imaging/targeted-imaging-scope-2",
    "process-acquisition/process-acquisition-on-finish",  # tests/test_automations.py runs them
    "respond-to-anomaly/requeue-tile-on-anomaly",
    "event-triggered/event-triggered-divisions",
    "adaptive-illumination/adaptive-illumination-live-cells",
    "stimulate-on-event/stimulate-on-event-optogenetics",
    "optimise-acquisition/optimise-acquisition-dapi",
    "autofocus/autofocus-drifting-timelapse",
    "uncertainty-triggered/uncertainty-triggered-nuclei",
}


def microscope_pools() -> dict[str, set[str]]:
    """Pool -> the microscopes its acquisition deployments name, from prefect.yaml."""
    import yaml

    document = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    pools: dict[str, set[str]] = {}
    for deployment in document["deployments"]:
        if "acquisition" in deployment.get("tags", []):
            microscope = deployment["parameters"]["params"]["microscope"]
            pools.setdefault(deployment["work_pool"]["name"], set()).add(microscope)
    return pools


def deploy_all(server: PrefectServer) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    with get_client(sync_client=True) as client:
        for name in ("batch-process", "microscope-reactions"):
            client.create_work_pool(WorkPoolCreate(name=name, type="process"), overwrite=True)
        for pool in microscope_pools():  # one run at a time per microscope, as documented
            client.create_work_pool(
                WorkPoolCreate(name=pool, type="process", concurrency_limit=1), overwrite=True
            )
    env = {**os.environ, "PREFECT_API_URL": server.url, "SCOPEFLOW_REPO": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all",
         "--prefect-file", "deployments/prefect.yaml"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_deployments_schedule_and_conversion_trigger(
    prefect_harness: PrefectServer, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    deploy_all(prefect_harness)
    with get_client(sync_client=True) as client:
        deployed = {f"{client.read_flow(d.flow_id).name}/{d.name}": d for d in
                    client.read_deployments()}  # fmt: skip
        assert set(deployed) >= DEPLOYMENTS, sorted(deployed)
        nightly = deployed["convert-folder/convert-inbox-nightly"]
        assert [s.schedule.cron for s in nightly.schedules] == ["0 2 * * *"]
        slide = deployed["targeted-imaging/targeted-imaging-slide"]
        assert slide.work_pool_name == "microscope-scope-1"
        assert slide.parameters["params"]["region"]["x1"] == 6000.0
        live = deployed["tracking/tracking-live-cells"]
        assert live.work_pool_name == "microscope-scope-1"
        # one pool per microscope: each pool serves one microscope, each microscope one pool
        pools = microscope_pools()
        assert pools == {"microscope-scope-1": {"scope-1"}, "microscope-scope-2": {"scope-2"}}
        for deployment in deployed.values():
            if "acquisition" in deployment.tags:
                name = deployment.parameters["params"]["microscope"]
                assert deployment.work_pool_name == f"microscope-{name}"
        from flows import TrackDatasetParams, TrackingParams

        TrackingParams.model_validate(live.parameters["params"])  # the deployed params are valid
        from flows import PlateScreenParams

        plate = deployed["plate-screen/plate-screen-96"]
        assert plate.work_pool_name == "microscope-scope-1"
        PlateScreenParams.model_validate(plate.parameters["params"])
        from flows import AcquireParams

        mda = deployed["acquire/acquire-mda-sequence"]
        assert mda.work_pool_name == "microscope-scope-1"
        AcquireParams.model_validate(mda.parameters["params"])
        from flows import EventTriggeredParams

        events = deployed["event-triggered/event-triggered-divisions"]
        assert events.work_pool_name == "microscope-scope-1"
        EventTriggeredParams.model_validate(events.parameters["params"])
        from flows import OptimiseAcquisitionParams

        optimise = deployed["optimise-acquisition/optimise-acquisition-dapi"]
        assert optimise.work_pool_name == "microscope-scope-1"
        OptimiseAcquisitionParams.model_validate(optimise.parameters["params"])
        from flows import UncertaintyParams

        smart = deployed["uncertainty-triggered/uncertainty-triggered-nuclei"]
        assert smart.work_pool_name == "microscope-scope-1"
        UncertaintyParams.model_validate(smart.parameters["params"])
        offline = deployed["track-dataset/track-dataset-hpc"]
        TrackDatasetParams.model_validate(offline.parameters["params"])
        on_conversion = client.read_deployments(
            deployment_filter=DeploymentFilter(
                name=DeploymentFilterName(any_=["segment-dataset-on-conversion"])
            )
        )[0]

    # a real conversion emits one event per image; the trigger turns it into a flow run of the
    # segmentation deployment (scheduled for the batch-process pool: no worker runs it here)
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    shutil.copy(shared_data("czi", "DAPI_GFP.czi"), inbox / "DAPI_GFP.czi")
    summary = convert_folder(ConvertFolderParams(input_folder=inbox, output_folder=outbox))
    assert summary["converted"] == 1
    image = str(outbox / "DAPI_GFP.ome.zarr")

    with get_client(sync_client=True) as client:
        deadline = time.monotonic() + 90
        runs = []
        while time.monotonic() < deadline and not runs:
            runs = [
                r for r in client.read_flow_runs()
                if r.deployment_id == on_conversion.id and r.parameters["params"]["image"] == image
            ]  # fmt: skip
            time.sleep(1)
    assert len(runs) == 1, f"no flow run of segment-dataset-on-conversion for {image}"
    assert runs[0].parameters["params"]["model"] == "classical"
