"""schemathesis against a real edge's OpenAPI document (benchmarks/edge_fuzz.py, a few seeded
cases per operation): 0 responses >= 500, every response documented and conforming to its
schema, the edge alive and answering afterwards, every frame it took inside the envelope."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("seed", [0, 7])
def test_fuzzed_requests_never_get_a_5xx_and_conform_to_the_openapi(
    tmp_path: Path, seed: int
) -> None:
    out = tmp_path / "fuzz.json"
    command = [
        sys.executable, "edge_fuzz.py", "--positive", "6", "--negative", "3",
        "--seed", str(seed), "--json", str(out),
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(
        command, cwd=REPO / "benchmarks", env=env, capture_output=True, text=True, timeout=600
    )
    assert out.exists(), done.stderr[-3000:]
    report = json.loads(out.read_text())
    # Known open defect (issue 15): now and then one fuzzed POST /v1/sequences is not answered
    # within the client's 60 s (no 5xx, the edge answers the next request); it is counted and
    # shown here, while every other failure (a 5xx, a response off its schema) fails the test
    stalls = [f for f in report["failures"] if _is_stall(f)]
    others = [f for f in report["failures"] if not _is_stall(f)]
    if stalls:
        print(f"{len(stalls)} stalled request(s): {[f['operation'] for f in stalls]}")
    failures = "\n".join(f["error"][:1500] for f in others[:3])
    assert not others, failures
    assert len(stalls) <= 1, stalls
    assert report["responses_5xx"] == 0
    assert report["requests"] >= 60  # every operation was exercised, valid and invalid
    statuses = report["statuses"]
    assert any(key.endswith(" 200") for key in statuses if "/v1/events" in key)
    assert any(key.endswith(" 422") for key in statuses if "/v1/events" in key)
    assert report["edge_alive_after"] and report["healthz_after"] == {"status": "ok"}
    assert report["frames_outside_envelope"] == 0
    assert report["dose_used_mj"] <= report["dose_budget_mj"]
    assert done.returncode == 0, done.stderr[-3000:]


def _is_stall(failure: dict[str, str]) -> bool:
    return failure["operation"] == "POST /v1/sequences" and "Read timed out" in failure["error"]
