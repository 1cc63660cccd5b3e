"""`scopeflow qc FOLDER_OR_FILE`: the live QC checks on images that already exist, one
verdict per image (each metric's value and threshold)."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ._cli_fail import fail as _fail
from ._errors import ScopeflowError

__all__ = ["register"]


def qc_cmd(
    target: Annotated[Path, typer.Argument(help="An image file, or a folder of them.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    profile: Annotated[
        str, typer.Option(help="Which files of a folder: zeiss-sem, thermo-mrc, ome-tiff, any.")
    ] = "any",
    config: Annotated[
        Path | None, typer.Option(help="QC thresholds (TOML or YAML; see tasks.qc.QCConfig).")
    ] = None,
    workers: Annotated[int, typer.Option(help="Threads measuring images.")] = 2,
    all_checks: Annotated[
        bool, typer.Option("--all", help="Print every metric, not only those not ok.")
    ] = False,
) -> None:
    """Judge existing images as the live QC would (the run's baseline: its own images)."""
    from tasks.live import VENDOR_PROFILES, Analyzer, AnalyzerSettings, FileListSource
    from tasks.qc import QCConfig, QCJudge, QCWorkers, run_qc

    if not target.exists():
        _fail(f"{target} does not exist; give an image file or a folder of images")
    if profile not in VENDOR_PROFILES:
        _fail(f"unknown profile {profile!r}; choose one of {', '.join(VENDOR_PROFILES)}")
    patterns = VENDOR_PROFILES[profile].patterns
    if target.is_dir():
        paths = sorted(
            (p for p in target.rglob("*") if p.is_file() and not _hidden(p, target)
             and any(fnmatch.fnmatch(p.name.lower(), pat) for pat in patterns)),
            key=lambda p: (p.stat().st_mtime_ns, p.as_posix()),
        )  # fmt: skip
        root = target
        if not paths:
            _fail(f"no images matching {', '.join(patterns)} under {target}")
    else:
        paths, root = [target], target.parent
    try:
        qc_config = QCConfig.load(config) if config else QCConfig()
    except ScopeflowError as exc:
        _fail(str(exc))
        return
    with QCWorkers("threads", workers=workers) as pool:
        analyzer = Analyzer(pool, AnalyzerSettings(max_in_flight=2 * workers))
        report = run_qc(FileListSource(paths, root), analyzer, QCJudge(qc_config, run_id="qc"))
        analyzer.close()
    verdicts = sorted(report.verdicts.values(), key=lambda v: v.index)
    if as_json:
        out: dict[str, Any] = {
            "images": [
                {
                    "image": v.image,
                    "level": v.level,
                    "error": v.error,
                    "checks": [c.model_dump() for c in v.checks],
                }
                for v in verdicts
            ],
            "levels": report.levels(),
            "baseline_from": min(len(verdicts), qc_config.learn_images),
        }
        typer.echo(json.dumps(out))
        return
    for v in verdicts:
        colour = {"ok": typer.colors.GREEN, "warn": typer.colors.YELLOW, "fail": typer.colors.RED}
        typer.secho(f"{v.image}: {v.level.upper()}", fg=colour[v.level])
        if v.error:
            typer.echo(f"    unreadable: {v.error}")
        for c in v.checks if all_checks else v.anomalies:
            limit = "-" if c.threshold is None else f"{c.threshold:.4g}"
            typer.echo(f"    {c.metric:12s} {c.value:12.4g}  threshold {limit:>10s}  {c.level}")
    levels = report.levels()
    if len(verdicts) < 3:
        typer.echo("no run baseline (fewer than 3 images): absolute limits only")
    typer.echo(f"{len(verdicts)} images: {levels['ok']} ok, {levels['warn']} warn, "
               f"{levels['fail']} fail")  # fmt: skip


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def register(app: typer.Typer) -> None:
    app.command("qc")(qc_cmd)
