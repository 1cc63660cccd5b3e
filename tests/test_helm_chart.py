"""The Helm chart infra/helm/scopeflow, checked with a real helm 3 (``bash ci/get_helm.sh``).

No Kubernetes runs here (no cluster, no container runtime), so these tests cover everything up to
applying the manifests: ``helm lint --strict``, the values schema as helm applies it on
lint/template, and the rendered manifests, parsed with pyyaml and checked for what scopeflow needs
(the worker's pool, the SCOPEFLOW_* settings it reads back, GPU requests, Secrets referenced and
never inlined, disabled components absent). kubectl is not used: even ``kubectl apply
--dry-run=client --validate=false`` asks an API server for its resource mapping, and fails without
one.

Skipped with the reason when ``helm`` is not on PATH; with ``SCOPEFLOW_REQUIRE_HELM=1`` (CI) a
missing helm fails instead, so CI can never pass these silently.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from scopeflow._settings import load_settings

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "infra" / "helm" / "scopeflow"
CI_VALUES = CHART / "ci"
ALL_GPU = CI_VALUES / "all-gpu-values.yaml"
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


def _run(helm: str, *args: str | Path, chart: Path = CHART) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm, "template", RELEASE, str(chart), "--namespace", NAMESPACE, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def render(helm: str, *args: str | Path, chart: Path = CHART) -> list[dict[str, Any]]:
    """``helm template`` with these arguments; every YAML document it prints, parsed."""
    out = _run(helm, *args, chart=chart)
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


@pytest.mark.parametrize("values", [None, ALL_GPU], ids=["defaults", "all-gpu"])
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
        assert labels["helm.sh/chart"] == "scopeflow-0.1.0", _id(doc)
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
