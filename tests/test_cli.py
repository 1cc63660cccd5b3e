"""The command line as a user runs it: help, and the real-microscope path's errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _scopeflow(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scopeflow", *args], capture_output=True, text=True, timeout=timeout
    )


def test_help_lists_the_commands() -> None:
    result = _scopeflow("--help")
    assert result.returncode == 0
    for command in ("edge", "demo", "version"):
        assert command in result.stdout
    serve = _scopeflow("edge", "serve", "--help")
    for option in ("--simulate", "--mm-config", "--token-file", "--data-dir", "--envelope"):
        assert option in serve.stdout


def _envelope(tmp_path: Path) -> str:
    """A real microscope needs its own envelope (refused without one: tests/test_envelope_edge)."""
    envelope = tmp_path / "envelope.yaml"
    envelope.write_text("x_limits_um: [0, 1000]\ny_limits_um: [0, 1000]\n")
    return str(envelope)


def test_mm_config_that_does_not_exist_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "scope.cfg"
    result = _scopeflow(
        "edge", "serve", "--mm-config", str(missing), "--data-dir", str(tmp_path),
        "--envelope", _envelope(tmp_path),
    )  # fmt: skip
    assert result.returncode == 2
    assert str(missing) in result.stderr


def test_mm_config_without_micro_manager_says_how_to_install_it(tmp_path: Path) -> None:
    config = tmp_path / "scope.cfg"
    config.write_text("Property,Core,Initialize,1\n")
    result = _scopeflow(
        "edge", "serve", "--mm-config", str(config), "--data-dir", str(tmp_path),
        "--envelope", _envelope(tmp_path),
    )  # fmt: skip
    assert result.returncode == 2
    assert "mmcore install" in result.stderr


def test_serve_without_a_microscope_says_what_to_pass(tmp_path: Path) -> None:
    result = _scopeflow("edge", "serve", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "--simulate" in result.stderr and "--mm-config" in result.stderr


def test_a_bad_envelope_file_is_reported(tmp_path: Path) -> None:
    envelope = tmp_path / "envelope.yaml"
    envelope.write_text("x_limits_um: [100, 0]\n")
    result = _scopeflow(
        "edge", "serve", "--simulate", "--port", "0", "--envelope", str(envelope),
        "--data-dir", str(tmp_path), "--camera-size", "64",
    )  # fmt: skip
    assert result.returncode == 2
    assert "x_limits_um" in result.stderr and str(envelope) in result.stderr
