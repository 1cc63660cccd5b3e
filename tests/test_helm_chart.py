"""The Helm chart infra/helm/scopeflow, checked with a real helm 3 (``bash ci/get_helm.sh``).

No Kubernetes runs here (no cluster, no container runtime), so these tests cover everything up to
applying the manifests: ``helm lint --strict``, the values schema as helm applies it on
lint/template, and the rendered manifests, parsed with pyyaml and checked for what scopeflow needs
(the worker's pool, the SCOPEFLOW_* settings it reads back, GPU requests, Secrets referenced and
never inlined, disabled components absent). kubectl is not used: even ``kubectl apply
--dry-run=client --validate=false`` asks an API server for its resource mapping, and fails without
one.

Every rendered manifest of every value set is also checked against the real schemas: core kinds
with ``kubernetes-validate`` (strict), the RayCluster against KubeRay's own CRD schema
(``../shared/data/kuberay_crds``), plus the API server's and the KubeRay operator's name rules that
no schema carries; each check is shown to refuse a broken manifest (``tests/_k8s_schemas.py``).

Skipped with the reason when ``helm`` is not on PATH; with ``SCOPEFLOW_REQUIRE_HELM=1`` (CI) a
missing helm fails instead, so CI can never pass these silently. Likewise the CRD checks skip
without ``../shared/data/kuberay_crds`` and fail with ``SCOPEFLOW_REQUIRE_SHARED_DATA=1`` (CI).
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from scopeflow import load_settings

from ._k8s_schemas import (
    KUBERAY_MAX_RAYCLUSTER_NAME,
    CrdValidator,
    api_server_errors,
    core_errors,
    kuberay_operator_errors,
    kubernetes_schema_versions,
)
from .conftest import SHARED_DATA, shared_data

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "infra" / "helm" / "scopeflow"
CI_VALUES = CHART / "ci"
ALL_GPU = CI_VALUES / "all-gpu-values.yaml"
PASSTHROUGH = CI_VALUES / "passthrough-values.yaml"  # every pass-through value filled
RELEASE = "rel"
NAMESPACE = "imaging"
PREFIX = f"{RELEASE}-scopeflow"


@pytest.fixture(scope="module")
def helm() -> str:
    path = shutil.which("helm")
    problem = None
    if path is None:
        problem = "helm is not on PATH (install it with: bash ci/get_helm.sh)"
    else:
        version = subprocess.run([path, "version", "--short"], capture_output=True, text=True)
        if not version.stdout.startswith("v3."):
            problem = f"{path} is not helm 3 ({version.stdout.strip() or version.stderr.strip()})"
    if problem is not None:
        if os.environ.get("SCOPEFLOW_REQUIRE_HELM") == "1":
            pytest.fail(f"SCOPEFLOW_REQUIRE_HELM=1 but {problem}")
        pytest.skip(problem)
    return path


def _run(
    helm: str, *args: str | Path, chart: Path = CHART, release: str = RELEASE
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm, "template", release, str(chart), "--namespace", NAMESPACE, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def render(
    helm: str, *args: str | Path, chart: Path = CHART, release: str = RELEASE
) -> list[dict[str, Any]]:
    """``helm template`` with these arguments; every YAML document it prints, parsed."""
    out = _run(helm, *args, chart=chart, release=release)
    assert out.returncode == 0, f"helm template {' '.join(map(str, args))} failed:\n{out.stderr}"
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc is not None]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(hits) == 1, f"expected one {kind} {name}, got {[_id(d) for d in docs]}"
    return hits[0]


def _id(doc: dict[str, Any]) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def components(docs: list[dict[str, Any]]) -> set[str]:
    return {
        d["metadata"]["labels"].get("app.kubernetes.io/component", "-")
        for d in docs
        if "labels" in d["metadata"]
    }


def pod_specs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every pod template, by "<Kind>/<name>[/<ray group>]"."""
    pods = {}
    for d in docs:
        if d["kind"] == "Deployment":
            pods[_id(d)] = d["spec"]["template"]["spec"]
        elif d["kind"] == "RayCluster":
            pods[f"{_id(d)}/head"] = d["spec"]["headGroupSpec"]["template"]["spec"]
            for g in d["spec"]["workerGroupSpecs"]:
                pods[f"{_id(d)}/{g['groupName']}"] = g["template"]["spec"]
    return pods


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    names = [e["name"] for e in container["env"]]
    assert len(names) == len(set(names)), f"duplicate env vars in {container['name']}: {names}"
    return {e["name"]: e for e in container["env"]}


@pytest.fixture(scope="module")
def default_docs(helm: str) -> list[dict[str, Any]]:
    return render(helm)


@pytest.fixture(scope="module")
def all_docs(helm: str) -> list[dict[str, Any]]:
    return render(helm, "-f", ALL_GPU)


# -- lint ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [None, ALL_GPU, PASSTHROUGH],
    ids=["defaults", "all-gpu", "passthrough"],
)
def test_lint_strict(helm: str, values: Path | None) -> None:
    args = [helm, "lint", "--strict", str(CHART)] + (["-f", str(values)] if values else [])
    out = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout
    assert "[WARNING]" not in out.stdout and "[ERROR]" not in out.stdout, out.stdout


def test_schema_is_draft7_and_accepts_the_defaults() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(values)
    # strict: every chart-owned object refuses unknown keys (typos fail instead of being ignored)
    for key in ("prefect", "scopeflow", "persistence", "worker", "server", "rayCluster", "dask"):
        assert schema["properties"][key]["additionalProperties"] is False, key


# -- defaults -----------------------------------------------------------------------------------


def test_defaults_are_a_working_server_and_worker(default_docs: list[dict[str, Any]]) -> None:
    assert sorted(_id(d) for d in default_docs) == sorted(
        [
            f"ServiceAccount/{PREFIX}",
            f"PersistentVolumeClaim/{PREFIX}-data",
            f"PersistentVolumeClaim/{PREFIX}-prefect-server",
            f"Deployment/{PREFIX}-prefect-server",
            f"Service/{PREFIX}-prefect-server",
            f"Deployment/{PREFIX}-worker",
        ]
    )
    worker = find(default_docs, "Deployment", f"{PREFIX}-worker")
    container = worker["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:7] == [
        *("prefect", "worker", "start"),
        *("--pool", "scopeflow", "--type", "process"),
    ]
    assert "--limit" not in container["command"]  # concurrency null: no limit
    # the worker talks to the chart's own server, through its Service
    service = find(default_docs, "Service", f"{PREFIX}-prefect-server")
    port = service["spec"]["ports"][0]["port"]
    assert (
        env_of(container)["PREFECT_API_URL"]["value"]
        == f"http://{PREFIX}-prefect-server:{port}/api"
    )
    server = find(default_docs, "Deployment", f"{PREFIX}-prefect-server")
    server_pod = server["spec"]["template"]["spec"]
    srv = server_pod["containers"][0]
    assert srv["command"][:5] == ["prefect", "server", "start", "--host", "0.0.0.0"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert srv[probe]["httpGet"]["path"] == "/api/health", probe
    assert env_of(srv)["PREFECT_SERVER_DATABASE_CONNECTION_URL"]["value"].startswith(
        "sqlite+aiosqlite:////var/lib/prefect/"
    )
    db = next(v for v in server_pod["volumes"] if v["name"] == "db")
    assert db["persistentVolumeClaim"]["claimName"] == f"{PREFIX}-prefect-server"
    # the Service reaches the server pods
    labels = server["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_every_resource_has_the_standard_labels(all_docs: list[dict[str, Any]]) -> None:
    for doc in all_docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "scopeflow", _id(doc)
        assert labels["app.kubernetes.io/instance"] == RELEASE, _id(doc)
        assert labels["app.kubernetes.io/managed-by"] == "Helm", _id(doc)
        assert labels["helm.sh/chart"] == "scopeflow-0.1.1", _id(doc)
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"]), _id(doc)
        assert len(doc["metadata"]["name"]) <= 63, _id(doc)
        if doc["kind"] == "Deployment":  # selectors select the pods' own labels, immutably
            selector = doc["spec"]["selector"]["matchLabels"]
            assert selector.items() <= doc["spec"]["template"]["metadata"]["labels"].items()
            assert "app.kubernetes.io/version" not in selector and "helm.sh/chart" not in selector


def test_long_release_names_stay_dns_labels(helm: str) -> None:
    release = "a-very-long-release-name-for-the-imaging-core-faci"  # 53: helm's longest
    out = subprocess.run(
        [helm, "template", release, str(CHART), "-f", str(ALL_GPU)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    ids = [_id(d) for d in docs]
    assert len(ids) == len(set(ids)) > 10
    for name in {d["metadata"]["name"] for d in docs}:
        assert len(name) <= 63 and "--" not in name, name
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name


def test_every_pod_runs_as_non_root(all_docs: list[dict[str, Any]]) -> None:
    pods = pod_specs(all_docs)
    assert len(pods) == 7  # server, worker, ray head + 2 groups, dask scheduler + workers
    for name, pod in pods.items():
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == 10001, name
        assert pod["serviceAccountName"] == PREFIX, name
        assert pod["imagePullSecrets"] == [{"name": "regcred"}], name
        for c in pod["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, name
            assert c["image"] == "registry.example.org/imaging/scopeflow:0.1.0-cuda", name
            # a read-only root needs writable scratch and home
            mounts = {m["mountPath"] for m in c["volumeMounts"]}
            assert {"/tmp", "/home/scopeflow"} <= mounts, name
            volumes = {v["name"] for v in pod["volumes"]}
            assert {m["name"] for m in c["volumeMounts"]} <= volumes, name


# -- the worker's settings ----------------------------------------------------------------------


def test_worker_command_names_pool_queues_and_limit(all_docs: list[dict[str, Any]]) -> None:
    worker = find(all_docs, "Deployment", f"{PREFIX}-worker")
    assert worker["spec"]["replicas"] == 2
    pod = worker["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"node-role.example.org/analysis": "true"}
    command = pod["containers"][0]["command"]
    assert command[:7] == [
        *("prefect", "worker", "start"),
        *("--pool", "facility-gpu", "--type", "kubernetes"),
    ]
    pairs = list(itertools.pairwise(command))
    assert ("--work-queue", "realtime") in pairs and ("--work-queue", "batch") in pairs
    assert ("--limit", "4") in pairs
    assert ("--name", "$(POD_NAME)") in pairs
    assert "--no-create-pool-if-not-found" in command
    assert "--with-healthcheck" in command
    probe = pod["containers"][0]["livenessProbe"]["httpGet"]
    assert probe["path"] == "/health"


def test_worker_env_is_read_back_by_scopeflow_settings(
    all_docs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The chart's env, fed to scopeflow's own settings loader, gives the intended tree."""
    worker = find(all_docs, "Deployment", f"{PREFIX}-worker")
    pod = worker["spec"]["template"]["spec"]
    env = env_of(pod["containers"][0])
    for name in list(os.environ):
        if name.startswith("SCOPEFLOW_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SCOPEFLOW_CONFIG", str(tmp_path / "absent.toml"))
    for name, var in env.items():
        if "value" in var:
            monkeypatch.setenv(name, var["value"])
        elif "secretKeyRef" in var.get("valueFrom", {}):  # what the kubelet would put there
            ref = var["valueFrom"]["secretKeyRef"]
            monkeypatch.setenv(name, f"<{ref['name']}/{ref['key']}>")
    settings = load_settings()

    assert settings.edge_url == "http://scope-pc-1.lab.example:8765"
    assert settings.edge.ring_mib == 256  # scopeflow.extraEnv, nested with __
    assert settings.omero.host == "omero.lab.example"
    assert settings.omero.port == 4064 and settings.omero.secure is True
    assert settings.omero.group == "imaging-core"
    assert settings.omero.username == "<omero-credentials/username>"
    assert settings.omero.password is not None
    assert settings.omero.password.get_secret_value() == "<omero-credentials/password>"
    assert str(settings.omero.spill_dir) == "/data/scopeflow/omero-spool"

    ray = settings.compute_profiles["ray"]
    assert ray.kind == "ray"
    assert ray.address == f"ray://{PREFIX}-ray:10001"
    assert (ray.workers, ray.cpus_per_worker, ray.gpus_per_worker) == (4, 2.0, 1.0)
    hpc = settings.compute_profiles["hpc"]
    assert (hpc.kind, hpc.queue, hpc.gpus, hpc.memory) == ("slurm", "gpu", 1, "32GiB")

    # the token file is the edge-token Secret, mounted read-only where the setting points
    token_file = settings.edge_token_file
    assert token_file is not None
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "edge-token")
    assert mount["readOnly"] is True
    assert token_file.parent == Path(mount["mountPath"])
    volume = next(v for v in pod["volumes"] if v["name"] == "edge-token")
    assert volume["secret"]["secretName"] == "edge-token"
    assert volume["secret"]["items"] == [{"key": "token", "path": token_file.name}]

    # OME-Zarr outputs land on the data volume: the PVC, mounted at the working directory
    data = next(v for v in pod["volumes"] if v["name"] == "data")
    assert data["persistentVolumeClaim"]["claimName"] == f"{PREFIX}-data"
    data_mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "data")
    assert data_mount["mountPath"] == pod["containers"][0]["workingDir"] == "/data/scopeflow"
    pvc = find(all_docs, "PersistentVolumeClaim", f"{PREFIX}-data")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["spec"]["storageClassName"] == "cephfs"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "2Ti"


def test_secrets_are_referenced_never_inlined(all_docs: list[dict[str, Any]]) -> None:
    assert not [d for d in all_docs if d["kind"] in ("Secret", "ConfigMap")]
    expected = {
        "PREFECT_API_KEY": ("prefect-api", "key"),
        "SCOPEFLOW_OMERO_USERNAME": ("omero-credentials", "username"),
        "SCOPEFLOW_OMERO_PASSWORD": ("omero-credentials", "password"),
    }
    secretish = re.compile(r"PASSWORD|API_KEY|USERNAME|CONNECTION_URL|_TOKEN$")
    for name, pod in pod_specs(all_docs).items():
        for c in pod["containers"]:
            env = env_of(c)
            for var_name, var in env.items():
                if secretish.search(var_name):
                    assert "value" not in var, f"{name}: {var_name} is inlined"
                    assert "secretKeyRef" in var["valueFrom"], f"{name}: {var_name}"
            for var_name, (secret, key) in expected.items():
                if "prefect-server" in name or "dask-scheduler" in name:
                    continue  # these run no scopeflow code: they get none of its settings
                ref = env[var_name]["valueFrom"]["secretKeyRef"]
                assert (ref["name"], ref["key"]) == (secret, key), f"{name}: {var_name}"
    server = find(all_docs, "Deployment", f"{PREFIX}-prefect-server")
    db = env_of(server["spec"]["template"]["spec"]["containers"][0])
    ref = db["PREFECT_SERVER_DATABASE_CONNECTION_URL"]["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == ("prefect-db", "connection-url")
    # with Postgres there is no SQLite volume
    assert not [d for d in all_docs if _id(d) == f"PersistentVolumeClaim/{PREFIX}-prefect-server"]


def test_kubernetes_pool_gets_rbac_for_jobs(
    all_docs: list[dict[str, Any]], default_docs: list[dict[str, Any]]
) -> None:
    role = find(all_docs, "Role", f"{PREFIX}-worker")
    jobs = next(r for r in role["rules"] if r["apiGroups"] == ["batch"])
    assert "jobs" in jobs["resources"] and "create" in jobs["verbs"]
    binding = find(all_docs, "RoleBinding", f"{PREFIX}-worker")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": PREFIX, "namespace": NAMESPACE}
    ]
    assert not [d for d in default_docs if d["kind"] in ("Role", "RoleBinding")]  # process pool


# -- Ray and Dask -------------------------------------------------------------------------------


def test_raycluster_has_cpu_and_gpu_groups(all_docs: list[dict[str, Any]]) -> None:
    cluster = find(all_docs, "RayCluster", f"{PREFIX}-ray")
    assert cluster["apiVersion"] == "ray.io/v1"
    spec = cluster["spec"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", spec["rayVersion"])
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    cpu, gpu = groups["cpu"], groups["gpu"]
    assert (cpu["replicas"], cpu["minReplicas"], cpu["maxReplicas"]) == (2, 1, 8)
    assert (gpu["replicas"], gpu["minReplicas"], gpu["maxReplicas"]) == (2, 0, 4)
    gpu_pod = gpu["template"]["spec"]
    limits = gpu_pod["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 2
    assert limits["memory"] == "16Gi"  # the group's own limits are kept
    assert gpu["rayStartParams"]["num-gpus"] == "2"
    assert gpu_pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu_pod[
        "tolerations"
    ]
    cpu_resources = cpu["template"]["spec"]["containers"][0]["resources"]
    assert "nvidia.com/gpu" not in cpu_resources.get("limits", {})
    assert "num-gpus" not in cpu["rayStartParams"]
    for params in [head["rayStartParams"], cpu["rayStartParams"], gpu["rayStartParams"]]:
        assert all(isinstance(v, str) for v in params.values()), params  # KubeRay: map of strings

    # every Ray pod has a memory-backed /dev/shm (object store) and the shared data volume
    for name, pod in pod_specs(all_docs).items():
        if "RayCluster" in name:
            volumes = {v["name"]: v for v in pod["volumes"]}
            assert volumes["dshm"]["emptyDir"]["medium"] == "Memory", name
            assert volumes["data"]["persistentVolumeClaim"]["claimName"] == f"{PREFIX}-data"

    # the Service the `ray` profile points at selects this cluster's head, on the client port
    service = find(all_docs, "Service", f"{PREFIX}-ray")
    assert service["spec"]["selector"] == {
        "ray.io/cluster": cluster["metadata"]["name"],
        "ray.io/node-type": "head",
    }
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
    assert ports["client"] == (10001, 10001) and ports["gcs-server"] == (6379, 6379)
    head_ports = {p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]}
    assert {10001, 6379, 8265} <= head_ports


def test_dask_workers_advertise_gpu_resource(all_docs: list[dict[str, Any]]) -> None:
    service = find(all_docs, "Service", f"{PREFIX}-dask-scheduler")
    port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "tcp-comm")
    scheduler = find(all_docs, "Deployment", f"{PREFIX}-dask-scheduler")
    sched_labels = scheduler["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= sched_labels.items()
    workers = find(all_docs, "Deployment", f"{PREFIX}-dask-worker")
    assert workers["spec"]["replicas"] == 3
    container = workers["spec"]["template"]["spec"]["containers"][0]
    command = container["command"]
    assert command[:3] == ["dask", "worker", f"tcp://{PREFIX}-dask-scheduler:{port}"]
    pairs = list(itertools.pairwise(command))
    assert ("--resources", "GPU=1") in pairs
    assert ("--nthreads", "2") in pairs and ("--memory-limit", "14GiB") in pairs
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_dask_without_gpus_requests_none(helm: str) -> None:
    docs = render(helm, "--set", "dask.enabled=true")
    container = find(docs, "Deployment", f"{PREFIX}-dask-worker")["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert "--resources" not in container["command"]
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})


# -- toggles ------------------------------------------------------------------------------------


def test_default_has_no_ray_or_dask(default_docs: list[dict[str, Any]]) -> None:
    assert not [d for d in default_docs if d["kind"] == "RayCluster"]
    assert components(default_docs) == {"-", "data", "prefect-server", "worker"}


def test_disabled_components_render_nothing(helm: str) -> None:
    off = [
        *("--set", "server.enabled=false", "--set", "worker.enabled=false"),
        *("--set", "persistence.enabled=false", "--set", "serviceAccount.create=false"),
        *("--set", "prefect.apiUrl=https://prefect.example/api"),
    ]
    assert render(helm, *off) == []
    # only the server off: the worker uses prefect.apiUrl, and no server resource is left
    docs = render(
        helm, "--set", "server.enabled=false", "--set", "prefect.apiUrl=http://p:4200/api"
    )
    assert "prefect-server" not in components(docs)
    worker = find(docs, "Deployment", f"{PREFIX}-worker")
    env = env_of(worker["spec"]["template"]["spec"]["containers"][0])
    assert env["PREFECT_API_URL"]["value"] == "http://p:4200/api"
    assert "PREFECT_API_KEY" not in env and "SCOPEFLOW_OMERO_HOST" not in env
    assert "SCOPEFLOW_EDGE_TOKEN_FILE" not in env and "SCOPEFLOW_COMPUTE_PROFILES" not in env
    # an existing claim: mounted, not created
    docs = render(helm, "--set", "persistence.existingClaim=lab-nfs")
    assert not [d for d in docs if _id(d) == f"PersistentVolumeClaim/{PREFIX}-data"]
    pod = find(docs, "Deployment", f"{PREFIX}-worker")["spec"]["template"]["spec"]
    data = next(v for v in pod["volumes"] if v["name"] == "data")
    assert data["persistentVolumeClaim"]["claimName"] == "lab-nfs"


# -- refusals -----------------------------------------------------------------------------------

BAD_VALUES = {
    "bad-negative-replicas.yaml": "worker.replicas",
    "bad-unknown-key.yaml": "gpuPerWorker",
    "bad-pool-type.yaml": "worker.workPool.type",
}


def test_every_bad_values_file_has_an_expectation() -> None:
    assert sorted(p.name for p in CI_VALUES.glob("bad-*.yaml")) == sorted(BAD_VALUES)


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_bad_values_are_refused_by_the_schema(helm: str, name: str) -> None:
    out = _run(helm, "-f", CI_VALUES / name)
    assert out.returncode != 0, f"{name} was accepted:\n{out.stdout[:2000]}"
    assert "values don't meet the specifications of the schema" in out.stderr, out.stderr
    assert BAD_VALUES[name] in out.stderr, out.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "server.enabled=false"], "prefect.apiUrl is required"),
        (
            ["--set", "server.database.type=postgres"],
            "server.database.postgres.existingSecret is required",
        ),
        (
            ["--set", "rayCluster.enabled=true", "--set", "rayCluster.cpuWorkers.minReplicas=3"],
            "rayCluster.cpuWorkers: need minReplicas <= replicas <= maxReplicas",
        ),
        (
            ["--set", "rayCluster.enabled=true", "--set", "rayCluster.cpuWorkers.enabled=false"],
            "enable rayCluster.cpuWorkers or rayCluster.gpuWorkers",
        ),
        (["--set", "rayCluster.gpuWorkers.gpusPerWorker=0"], "gpusPerWorker"),
        (["--set", "worker.concurrency=0"], "worker.concurrency"),
    ],
    ids=["no-api-url", "postgres-no-secret", "ray-bounds", "ray-no-groups", "zero-gpus", "limit-0"],
)
def test_inconsistent_values_fail_naming_the_key(helm: str, args: list[str], message: str) -> None:
    out = _run(helm, *args)
    assert out.returncode != 0, f"{args} was accepted"
    assert message in out.stderr, out.stderr


# -- NOTES.txt ----------------------------------------------------------------------------------


def test_notes_tell_where_to_connect(helm: str, tmp_path: Path) -> None:
    """helm renders NOTES.txt only on install (which needs a cluster): render it here as a
    ConfigMap in a copy of the chart."""
    chart = tmp_path / "scopeflow"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "_notes_test.tpl").write_text(
        '{{- define "test.notes" -}}\n' + notes + "\n{{- end }}\n"
    )
    (chart / "templates" / "notes-test.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
        'data:\n  notes: {{ include "test.notes" . | quote }}\n'
    )
    docs = render(helm, "-f", ALL_GPU, "-s", "templates/notes-test.yaml", chart=chart)
    text = docs[0]["data"]["notes"]
    assert f'BackendConfig(kind="ray", address="ray://{PREFIX}-ray:10001"' in text
    assert f'BackendConfig(kind="dask", address="tcp://{PREFIX}-dask-scheduler:8786"' in text
    assert "KubeRay operator" in text
    assert 'profile="ray"' in text
    assert 'work pool "facility-gpu" (type kubernetes)' in text
    assert f"port-forward svc/{PREFIX}-prefect-server 4200" in text


# -- the real schemas ---------------------------------------------------------------------------
# Every rendered manifest of every value set below is checked against what a cluster checks:
# core kinds with kubernetes-validate (the upstream OpenAPI schemas, shipped in the package, strict:
# unknown fields are errors), KubeRay's RayCluster against the openAPIV3Schema of KubeRay's own CRD
# (../shared/data/kuberay_crds, unknown fields refused rather than pruned), plus the API server's
# and the KubeRay operator's name and port rules that no schema carries (tests/_k8s_schemas.py).

# Kubernetes 1.33 is the version checked as "what a facility runs today" (late 2026): the Kubernetes
# of OpenShift 4.20, an extended-update-support release that on-premises clusters stay on for
# years, and a few minor versions behind the upstream-supported ones. Also checked: the chart's own
# kubeVersion floor (Chart.yaml, 1.25), so that claim holds, and the newest schemas the installed
# kubernetes-validate ships (1.37 with kubernetes-validate 1.37), for the clusters that upgrade.
FACILITY_KUBERNETES = "1.33.0"
KUBERAY_API_VERSION = "v1"  # the served, storage version of both CRDs; the chart renders ray.io/v1
KUBERAY_CRDS = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}
LONGEST_RELEASE = "a-very-long-release-name-for-the-imaging-core-facilit"  # 53: helm's longest

# every combination of components the tests render, plus every pass-through value filled
VALUE_SETS: dict[str, list[str | Path]] = {
    "defaults": [],
    "all-gpu": ["-f", ALL_GPU],
    "passthrough": ["-f", PASSTHROUGH],
    "dask-cpu-only": ["--set", "dask.enabled=true"],
    "ray-gpu-group-only": [
        *("--set", "rayCluster.enabled=true", "--set", "rayCluster.cpuWorkers.enabled=false"),
        *("--set", "rayCluster.gpuWorkers.enabled=true"),
    ],
    "external-server": ["--set", "server.enabled=false", "--set", "prefect.apiUrl=http://p/api"],
    "existing-claims": [
        *("--set", "persistence.existingClaim=lab-nfs"),
        *("--set", "server.database.sqlite.existingClaim=prefect-db"),
    ],
    "all-gpu-no-volume-no-account": [
        *("-f", ALL_GPU, "--set", "persistence.enabled=false"),
        *("--set", "serviceAccount.create=false", "--set", "worker.healthcheck=false"),
    ],
}

WITH_RAY = {"all-gpu", "passthrough", "ray-gpu-group-only", "all-gpu-no-volume-no-account"}


def _kubernetes_versions() -> list[str]:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    floor = re.fullmatch(r">=\s*(\d+\.\d+)\.\d+(-0)?", chart["kubeVersion"])
    assert floor, f"Chart.yaml kubeVersion {chart['kubeVersion']!r}: expected '>=X.Y.Z-0'"
    shipped = kubernetes_schema_versions()
    versions = [f"{floor.group(1)}.0", FACILITY_KUBERNETES, shipped[-1]]
    missing = [v for v in versions if v not in shipped]
    assert not missing, f"kubernetes-validate {kubernetes_validate.__version__} lacks {missing}"
    return sorted(set(versions), key=lambda v: tuple(map(int, v.split("."))))


KUBERNETES_VERSIONS = _kubernetes_versions()


@pytest.fixture(scope="module")
def kuberay() -> dict[str, CrdValidator]:
    folder = SHARED_DATA / "kuberay_crds"
    if not folder.is_dir() and os.environ.get("SCOPEFLOW_REQUIRE_SHARED_DATA") == "1":
        pytest.fail(f"SCOPEFLOW_REQUIRE_SHARED_DATA=1 but {folder} is absent")
    folder = shared_data("kuberay_crds")
    return {
        kind: CrdValidator.from_file(folder / name, KUBERAY_API_VERSION)
        for kind, name in KUBERAY_CRDS.items()
    }


def _is_kuberay(doc: dict[str, Any]) -> bool:
    return doc["apiVersion"].split("/")[0] == "ray.io"


def manifest_errors(
    doc: dict[str, Any], k8s: str, kuberay: dict[str, CrdValidator] | None = None
) -> list[str]:
    """Everything a cluster of Kubernetes `k8s` with KubeRay would refuse in this manifest."""
    if _is_kuberay(doc):
        assert kuberay is not None, "KubeRay manifests need the kuberay fixture"
        if doc["kind"] not in kuberay:
            return [f"no KubeRay CRD for {doc['kind']} here"]
        errors = kuberay[doc["kind"]].errors(doc, k8s) + kuberay_operator_errors(doc)
    else:
        errors = core_errors(doc, k8s)
    return errors + api_server_errors(doc)


def _all_errors(
    docs: list[dict[str, Any]], kuberay: dict[str, CrdValidator] | None = None
) -> list[str]:
    return [
        f"{_id(doc)} (Kubernetes {version}): {error}"
        for version in KUBERNETES_VERSIONS
        for doc in docs
        for error in manifest_errors(doc, version, kuberay)
    ]


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_rendered_core_manifests_pass_the_kubernetes_schemas(helm: str, name: str) -> None:
    everything = render(helm, *VALUE_SETS[name])
    assert any(map(_is_kuberay, everything)) == (name in WITH_RAY)
    docs = [d for d in everything if not _is_kuberay(d)]
    assert docs
    problems = _all_errors(docs)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", sorted(WITH_RAY))
def test_rendered_rayclusters_pass_kuberays_crd_and_operator(
    helm: str, kuberay: dict[str, CrdValidator], name: str
) -> None:
    docs = [d for d in render(helm, *VALUE_SETS[name]) if _is_kuberay(d)]
    assert [d["kind"] for d in docs] == ["RayCluster"]
    problems = _all_errors(docs, kuberay)
    assert not problems, "\n".join(problems)


def test_the_value_sets_render_every_kind_the_chart_has(helm: str) -> None:
    kinds = {d["kind"] for args in VALUE_SETS.values() for d in render(helm, *args)}
    templates = {
        m
        for t in (CHART / "templates").glob("*.yaml")
        for m in re.findall(r"^kind: (\w+)", t.read_text(), re.M)
    }
    expected = {"ServiceAccount", "PersistentVolumeClaim", "Deployment", "Service"}
    expected |= {"Role", "RoleBinding", "RayCluster"}
    assert kinds == templates == expected


def test_longest_release_name_passes_the_schemas_and_kuberay(
    helm: str, kuberay: dict[str, CrdValidator]
) -> None:
    assert len(LONGEST_RELEASE) == 53
    docs = render(helm, "-f", ALL_GPU, release=LONGEST_RELEASE)
    problems = _all_errors(docs, kuberay)
    assert not problems, "\n".join(problems)
    cluster = next(d for d in docs if d["kind"] == "RayCluster")
    assert len(cluster["metadata"]["name"]) <= KUBERAY_MAX_RAYCLUSTER_NAME
    # the `ray` profile points at the Service that really exists
    service = find(docs, "Service", cluster["metadata"]["name"])
    worker = next(
        d
        for d in docs
        if d["kind"] == "Deployment"
        and d["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"
    )
    env = env_of(worker["spec"]["template"]["spec"]["containers"][0])
    profiles = json.loads(env["SCOPEFLOW_COMPUTE_PROFILES"]["value"])
    assert profiles["ray"]["address"] == f"ray://{service['metadata']['name']}:10001"


@pytest.mark.parametrize("release", ["2024-imaging", "lab.v2"])
def test_release_names_that_make_invalid_service_names_fail_with_the_fix(
    helm: str, release: str
) -> None:
    out = _run(helm, release=release)
    assert out.returncode != 0
    assert "must be DNS-1035 labels" in out.stderr and "fullnameOverride" in out.stderr, out.stderr
    # the fix it names works; without a Service (nor RayCluster) the release name is fine as is
    assert render(helm, "--set", "fullnameOverride=imaging-scopeflow", release=release)
    assert render(
        helm, "--set", "server.enabled=false", "--set", "prefect.apiUrl=http://p/api",
        release=release,
    )  # fmt: skip


def test_whole_number_ray_start_params_stay_integers(helm: str) -> None:
    cluster = find(render(helm, "-f", PASSTHROUGH), "RayCluster", f"{PREFIX}-ray")
    head = cluster["spec"]["headGroupSpec"]["rayStartParams"]
    assert head["object-store-memory"] == "1000000000"  # not "1e+09": ray start wants an int
    assert head["num-cpus"] == "0" and head["include-dashboard"] == "true"
    groups = {g["groupName"]: g["rayStartParams"] for g in cluster["spec"]["workerGroupSpecs"]}
    assert groups["gpu"] == {"num-gpus": "1", "resources": '{"A100": 1}'}
    docs = render(
        helm, "-f", PASSTHROUGH, "--set", "rayCluster.cpuWorkers.rayStartParams.num-cpus=1.5"
    )
    cluster = find(docs, "RayCluster", f"{PREFIX}-ray")
    assert cluster["spec"]["workerGroupSpecs"][0]["rayStartParams"]["num-cpus"] == "1.5"


# -- the checks can fail ------------------------------------------------------------------------
# Each validator, fed a rendered manifest broken in one way, refuses it naming the place: so the
# passes above are not vacuous.


def _break(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of doc with the dotted path set to value (integers index lists); `-key` deletes."""
    broken = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node: Any = broken
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if last.startswith("-"):
        del node[last[1:]]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return broken


POD = "spec.template.spec"
HEAD = "spec.headGroupSpec"
GPU_GROUP = "spec.workerGroupSpecs.1"
BROKEN = {
    # kubernetes-validate, strict
    "core-misspelled-pod-field": ("Deployment", f"{POD}.nodeSelecter", {"a": "b"}, "nodeSelecter"),
    "core-misspelled-container-field": (
        "Deployment", f"{POD}.containers.0.imagePullPolcy", "Always", "imagePullPolcy"
    ),
    "core-wrong-type": ("Deployment", "spec.replicas", "2", "spec.replicas"),
    "core-misspelled-metadata": ("Service", "metadata.lables", {"a": "b"}, "lables"),
    "core-port-not-int-or-string": ("Service", "spec.ports.0.targetPort", 1.5, "targetPort"),
    # the API server's rules beyond the schema
    "service-name-not-dns1035": ("Service", "metadata.name", "2lab-scopeflow-ray", "DNS-1035"),
    "port-name-too-long": (
        "Deployment", f"{POD}.containers.0.ports.0.name", "prefect-worker-health", "IANA_SVC_NAME"
    ),
    "label-value-invalid": ("Deployment", "metadata.labels.team", "imaging core", "label value"),
    # KubeRay's CRD schema
    "crd-misspelled-field": ("RayCluster", "spec.workerGroupSpec", [], "workerGroupSpec"),
    "crd-misspelled-pod-field": (
        "RayCluster", f"{GPU_GROUP}.template.spec.nodeSelecter", {"a": "b"}, "nodeSelecter"
    ),
    "crd-wrong-type": ("RayCluster", f"{GPU_GROUP}.replicas", "2", "replicas"),
    "crd-int32-range": ("RayCluster", f"{GPU_GROUP}.maxReplicas", 2**31, "int32"),
    "crd-start-params-not-strings": ("RayCluster", f"{HEAD}.rayStartParams.num-cpus", 0, "string"),
    "crd-int-or-string-wrong": (
        "RayCluster",
        f"{HEAD}.template.spec.containers.0.ports.0.containerPort",
        "6379",
        "containerPort",
    ),
    "crd-list-map-duplicate": (
        "RayCluster", f"{HEAD}.template.spec.containers.0.ports.1.containerPort", 6379,
        "same list-map key",
    ),
    "crd-missing-required": (
        "RayCluster", f"{HEAD}.template.spec.containers.0.-name", None, "'name' is a required"
    ),
    "crd-cel-field": ("RayCluster", "spec.managedBy", "someone-else", "CEL rules"),
    "crd-misspelled-metadata": ("RayCluster", "metadata.lables", {"a": "b"}, "lables"),
    # the KubeRay operator's rules
    "kuberay-name-too-long": ("RayCluster", "metadata.name", "r" * 54, "no more than 53"),
    "kuberay-name-not-dns1035": ("RayCluster", "metadata.name", "2lab-ray", "DNS1035"),
    "kuberay-min-over-max": ("RayCluster", f"{GPU_GROUP}.minReplicas", 5, "greater than"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_each_check_refuses_a_broken_manifest(
    all_docs: list[dict[str, Any]], request: pytest.FixtureRequest, case: str
) -> None:
    kind, path, value, expected = BROKEN[case]
    doc = next(d for d in all_docs if d["kind"] == kind)
    kuberay = request.getfixturevalue("kuberay") if _is_kuberay(doc) else None
    assert not manifest_errors(doc, FACILITY_KUBERNETES, kuberay)  # valid before
    errors = manifest_errors(_break(doc, path, value), FACILITY_KUBERNETES, kuberay)
    assert errors, f"{case}: {path} = {value!r} was accepted"
    assert any(expected in e for e in errors), errors


def test_int_or_string_and_nullable_accept_both_forms(kuberay: dict[str, CrdValidator]) -> None:
    rc = kuberay["RayCluster"]
    probe = {"httpGet": {"path": "/", "port": "dashboard"}}
    doc = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "ok"},
        "spec": {
            "headGroupSpec": {
                "template": {"spec": {"containers": [{"name": "h", "readinessProbe": probe}]}}
            }
        },
    }
    assert rc.errors(doc, FACILITY_KUBERNETES) == []
    doc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["readinessProbe"] = {
        "httpGet": {"path": "/", "port": 8265}
    }
    assert rc.errors(doc, FACILITY_KUBERNETES) == []
    doc["status"] = {"lastUpdateTime": None}  # nullable: true
    assert rc.errors(doc, FACILITY_KUBERNETES) == []


def test_a_rayjob_carrying_the_charts_cluster_spec_validates(
    all_docs: list[dict[str, Any]], kuberay: dict[str, CrdValidator]
) -> None:
    """The chart renders no RayJob; the RayJob schema is checked with the chart's cluster spec in
    it (what a RayJob submitted against this setup would carry), both ways."""
    cluster = find(all_docs, "RayCluster", f"{PREFIX}-ray")
    job = {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": "segment-plate-42", "labels": cluster["metadata"]["labels"]},
        "spec": {
            "entrypoint": "python -m flows.batch --plate 42",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 600,
            "rayClusterSpec": cluster["spec"],
        },
    }
    assert manifest_errors(job, FACILITY_KUBERNETES, kuberay) == []
    for path, value, expected in [
        ("spec.entrypoint", 5, "entrypoint"),
        ("spec.shutdownAfterJobFinish", True, "shutdownAfterJobFinish"),
        ("spec.rayClusterSpec.headGroupSpec.rayStartParams.num-cpus", 0, "string"),
    ]:
        errors = manifest_errors(_break(job, path, value), FACILITY_KUBERNETES, kuberay)
        assert any(expected in e for e in errors), (path, errors)


def test_crd_loader_refuses_what_it_cannot_check() -> None:
    def crd(node: dict[str, Any], served: bool = True) -> dict[str, Any]:
        version = {"name": "v1", "served": served, "storage": True}
        version["schema"] = {"openAPIV3Schema": {"type": "object", "properties": {"spec": node}}}
        return {
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "things.example.org"},
            "spec": {"group": "example.org", "names": {"kind": "Thing"}, "versions": [version]},
        }

    assert CrdValidator(crd({"type": "object"}), "v1").schema["properties"]["spec"] == {
        "type": "object",
        "additionalProperties": False,  # a bare object: the API server would prune it all
    }
    with pytest.raises(ValueError, match="x-kubernetes-new-thing"):
        CrdValidator(crd({"type": "string", "x-kubernetes-new-thing": True}), "v1")
    with pytest.raises(ValueError, match="not served"):
        CrdValidator(crd({"type": "object"}, served=False), "v1")
    with pytest.raises(ValueError, match="no version v2"):
        CrdValidator(crd({"type": "object"}), "v2")
