"""Fuzz a real edge agent through its own OpenAPI document with schemathesis.

Starts ``scopeflow edge serve --simulate`` (small camera, tight limits so that fuzzed requests
stay cheap), then, for every operation, sends schema-valid requests (``--positive`` each) and
schema-invalid ones (``--negative`` each), seeded (the same cases for the same seed), each
command under a fresh command id so that it reaches the envelope rather than the idempotency
check. Every response is
checked by schemathesis (no 5xx, a documented status code, a body that conforms to the
documented schema, the right content type; a schema-invalid request must be refused) except
``positive_data_acceptance``: a schema-valid request outside the safety envelope is refused on
purpose. Afterwards the edge must still answer ``/healthz`` and ``/v1/state``, every frame it
took must lie inside the envelope, and its used light dose within the budget.

    python benchmarks/edge_fuzz.py [--positive 200] [--negative 100] [--seed 0]
        [--json benchmarks/results/edge_fuzz.json]

tests/test_edge_fuzz.py runs it with a few cases per operation; the recorded result comes from
a longer run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import schemathesis
from _machine import describe_machine
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from tasks.hardware import EdgeClient, EdgeProcess

RESULTS = Path(__file__).parent / "results" / "edge_fuzz.json"

LIMITS = {  # cheap requests: the fuzzer must not spend its time on legitimate heavy work
    "SCOPEFLOW_EDGE__LIMITS__MAX_TRUTH_AREA_MM2": "1",
    "SCOPEFLOW_EDGE__LIMITS__TRUTH_HORIZON_S": "60",
    "SCOPEFLOW_EDGE__LIMITS__MAX_EVENTS_PER_REQUEST": "2000",
    "SCOPEFLOW_EDGE__LIMITS__MAX_QUEUED_EVENTS": "4000",
    "SCOPEFLOW_EDGE__LIMITS__MAX_BODY_BYTES": str(1 << 20),
}
ENVELOPE = """\
x_limits_um: [1000.0, 9000.0]
y_limits_um: [1000.0, 9000.0]
z_limits_um: [-100.0, 100.0]
max_exposure_ms: 50.0
light_dose_budget_mj: 200.0
channel_power_mw: {BF: 0.0, DAPI: 20.0, GFP: 30.0}
"""


def fuzz(url: str, token: str, *, positive: int, negative: int, seed_value: int) -> dict[str, Any]:
    """Run the operations of the edge at ``url``; return the counts and the failures."""
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    statuses: Counter[str] = Counter()
    failures: list[dict[str, str]] = []
    headers = {"Authorization": f"Bearer {token}"}
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode, examples in (
            (GenerationMode.POSITIVE, positive),
            (GenerationMode.NEGATIVE, negative),
        ):
            if not examples:
                continue

            @seed(seed_value)
            @settings(
                max_examples=examples,
                database=None,
                deadline=None,
                phases=[Phase.explicit, Phase.generate],  # a failure is reported, not shrunk
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def send(case: Any) -> None:
                label = case.operation.label
                mode_name = case.meta.generation.mode.value if case.meta else "unknown"
                _unique_command_id(case)
                try:
                    response = case.call_and_validate(
                        headers=headers, excluded_checks=[positive_data_acceptance], timeout=60
                    )
                except (Exception, BaseExceptionGroup) as exc:  # recorded, the run goes on
                    if label == "POST /v1/lease":
                        _give_lease_back(url, headers)
                    error = str(exc)
                    failures.append({"operation": label, "mode": mode_name, "error": error})
                    status = re.search(r"^\[(\d{3})\]", error, re.MULTILINE)
                    statuses[f"{label} {status.group(1) if status else 'no'} failed check"] += 1
                    return
                statuses[f"{label} {response.status_code}"] += 1
                if label == "POST /v1/lease":
                    # a lease taken by the fuzzer would answer every later control request
                    # with 423 before its body is read (holders are checked before input)
                    _give_lease_back(url, headers)
                if label == "POST /v1/sim/faults":
                    # injected faults (up to 1,000 hung stage moves) would turn the later cases
                    # into fault tests (tests/test_faults.py has those), not input tests
                    _clear_faults(url, headers)

            try:
                send()
            except Unsatisfiable:  # nothing to make invalid (an operation without inputs)
                continue
    return {"statuses": dict(sorted(statuses.items())), "failures": failures}


def _clear_faults(url: str, headers: dict[str, str]) -> None:
    httpx.post(f"{url}/v1/sim/faults", json={"clear": True}, headers=headers, timeout=10)


def _give_lease_back(url: str, headers: dict[str, str]) -> None:
    lease = httpx.get(f"{url}/v1/lease", headers=headers, timeout=10).json()
    if lease:  # the same user may release its holder's lease
        params = {"holder": lease["holder"]}
        httpx.delete(f"{url}/v1/lease", params=params, headers=headers, timeout=10)


_COMMAND_ID = re.compile(r"[A-Za-z0-9._:\-]{1,80}")


def _unique_command_id(case: Any) -> None:
    """A valid command id made unique (a repeat would only meet the idempotency check); an
    invalid one is the point of a negative case and stays as it is."""
    body = case.body
    given = body.get("command_id") if isinstance(body, dict) else None
    if isinstance(given, str) and _COMMAND_ID.fullmatch(given):
        body["command_id"] = f"{given}-{uuid.uuid4().hex}"


def run(positive: int, negative: int, seed_value: int) -> dict[str, Any]:
    os.environ.update(LIMITS)
    with tempfile.TemporaryDirectory() as tmp:
        envelope = Path(tmp) / "envelope.yaml"
        envelope.write_text(ENVELOPE)
        args = ["--camera-size", "32", "--envelope", str(envelope)]
        with EdgeProcess(Path(tmp) / "edge", extra_args=args, startup_timeout=240) as edge:
            token = edge.token_file.read_text().strip()
            t0 = time.perf_counter()
            report = fuzz(
                edge.url, token, positive=positive, negative=negative, seed_value=seed_value
            )
            report["seconds"] = round(time.perf_counter() - t0, 1)
            alive = edge.alive()
            if alive:
                report.update(_aftermath(edge, token))
            if report["failures"] or not alive:  # the edge's side (a traceback for a 5xx)
                report["edge_log_tail"] = edge.stderr_lines[-120:]
                report["edge_exit"] = None if alive else edge.stop()
        report["edge_alive_after"] = alive
    report.setdefault("frames_outside_envelope", None)
    counts = report["statuses"]
    report["requests"] = sum(counts.values())
    report["responses_5xx"] = sum(
        n for key, n in counts.items() if re.search(r" 5\d\d( failed check)?$", key)
    )
    report["failed_checks"] = len(report["failures"])
    report["settings"] = {"positive": positive, "negative": negative, "seed": seed_value}
    return report


def _aftermath(edge: EdgeProcess, token: str) -> dict[str, Any]:
    """The edge still answers; every frame it took is inside the envelope, the dose within."""
    health = httpx.get(f"{edge.url}/healthz", timeout=10).json()
    _give_lease_back(edge.url, {"Authorization": f"Bearer {token}"})
    with EdgeClient(edge.url, token=token) as client:
        client.stop()
        state = client.wait_until_idle(timeout=120)
        outside = 0
        for index in range(state.frames_journaled):
            stage = client.frame(index).header.stage
            inside = 1000 <= stage.x <= 9000 and 1000 <= stage.y <= 9000
            outside += not (inside and -100 <= stage.z <= 100)
    return {
        "healthz_after": health,
        "frames_taken": state.frames_journaled,
        "frames_outside_envelope": outside,
        "dose_used_mj": state.light_dose.used_mj,
        "dose_budget_mj": state.light_dose.budget_mj,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--positive", type=int, default=200, help="valid requests per operation")
    parser.add_argument("--negative", type=int, default=100, help="invalid ones per operation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=RESULTS, help="where to write the result")
    args = parser.parse_args()
    report = run(args.positive, args.negative, args.seed)
    report["machine"] = describe_machine(schemathesis=schemathesis.__version__)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    summary = {k: report[k] for k in ("requests", "responses_5xx", "failed_checks", "seconds")}
    print(json.dumps(summary))
    sys.exit(1 if report["responses_5xx"] or report["failed_checks"] else 0)


if __name__ == "__main__":
    main()
