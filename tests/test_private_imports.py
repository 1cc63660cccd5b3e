"""No module imports another package's private modules or names.

``from scopeflow._errors import X`` reaches into the core's private module; ``from scopeflow
import X`` is the public way. Ruff's PLC2701 checks this between top-level packages; this test
also checks between the subpackages of ``tasks/`` (``tasks.decisions`` may not import
``tasks.inference._measure``) and covers the benchmark scripts. A private module or name
belongs to the package that contains it, and to that package's subpackages. A line marked
``# noqa: PLC2701`` (with the reason) is exempt, as it is for ruff.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHECKED = ("scopeflow", "tasks", "flows", "benchmarks", "tests")


def _is_private(segment: str) -> bool:
    return segment.startswith("_") and not segment.startswith("__")


def _module_of(path: Path) -> list[str]:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _package_of(path: Path) -> list[str]:
    module = _module_of(path)
    return module if path.name == "__init__.py" else module[:-1]


def _imported(node: ast.AST, path: Path) -> list[list[str]]:
    """Every dotted path the import statement reaches, down to the private segment if any."""
    if isinstance(node, ast.Import):
        return [_sibling(alias.name.split("."), path) for alias in node.names]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        package = _package_of(path)
        base = package[: len(package) - (node.level - 1)]
    else:
        base = []
    module = base + (node.module.split(".") if node.module else [])
    if node.level == 0:
        module = _sibling(module, path)
    return [[*module, alias.name] for alias in node.names]


def _sibling(module: list[str], path: Path) -> list[str]:
    """A script's helper next to it, imported by plain name (``benchmarks/_machine.py``), as
    the module of the script's folder."""
    if len(module) == 1 and (path.parent / f"{module[0]}.py").is_file():
        return _package_of(path) + module
    return module


def _owner(target: list[str], private: int) -> list[str]:
    """The package a private module or name belongs to: the one containing it (a private name
    in a module of ours belongs to that module's package)."""
    owner = target[:private]
    if owner and (REPO.joinpath(*owner).with_suffix(".py")).is_file():
        return owner[:-1]
    return owner


def _offences(path: Path) -> list[str]:
    source = path.read_text()
    lines = source.splitlines()
    importer = _module_of(path)
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        if any(mark in lines[node.lineno - 1] for mark in ("noqa: PLC2701", "# private:")):
            continue
        for target in _imported(node, path):
            private = next((i for i, s in enumerate(target) if _is_private(s)), None)
            if private is None:
                continue
            owner = _owner(target, private)
            if not owner or importer[: len(owner)] != owner:
                where = f"{path.relative_to(REPO).as_posix()}:{node.lineno}"
                found.append(f"{where} imports {'.'.join(target)}")
    return found


def _checked_files() -> list[Path]:
    return sorted(p for top in CHECKED for p in (REPO / top).rglob("*.py"))


def test_no_module_imports_another_packages_private_modules() -> None:
    offences = [offence for path in _checked_files() for offence in _offences(path)]
    assert not offences, "use the package's public names instead:\n" + "\n".join(offences)


def test_the_check_sees_a_private_import_across_subpackages(tmp_path: Path) -> None:
    """The check itself: tasks.decisions reaching into tasks.inference is caught; a package
    importing its own private modules, or a parent package's, is not."""
    probe = REPO / "tasks" / "decisions" / "_probe_for_test.py"
    probe.write_text(
        "from tasks.inference._measure import measure_objects\n"
        "from tasks import _ray_session\n"
        "from ._geometry import FrameGeometry\n"
        "from tasks.decisions._targets import Detection\n"
        "from scopeflow import _objects\n"
    )
    try:
        offences = _offences(probe)
    finally:
        probe.unlink()
    assert [o.split(" imports ")[1] for o in offences] == [
        "tasks.inference._measure.measure_objects",
        "scopeflow._objects",
    ]
