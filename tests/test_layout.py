"""The folders are the architecture: imports point only down the layers

    benchmarks/studies  ->  benchmarks/analysis  ->  benchmarks/app (ddrs_app)  ->  ddrs, manifolds, certify

and the tests mirror the packages. Read from the source with ``ast`` (lazy imports inside functions
count), so a new module cannot slip an upward import past this test."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("certify", "manifolds", "ddrs")
#: folder -> top-level import names it must never import
FORBIDDEN = {
    "certify": ("ddrs_app", "benchmarks"),
    "manifolds": ("ddrs_app", "benchmarks"),
    "ddrs": ("ddrs_app", "benchmarks"),
    "benchmarks/app": ("benchmarks",),  # the installed application: no analysis, no studies
    "benchmarks/analysis": ("benchmarks.studies",),
}


def imported_names(path: Path) -> list[tuple[int, str]]:
    """Every absolute module name ``path`` imports (``import a.b`` and ``from a.b import c``), with its line."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
    return out


def _matches(name: str, forbidden: str) -> bool:
    return name == forbidden or name.startswith(forbidden + ".")


def test_imports_point_only_down_the_layers():
    bad = []
    for folder, forbidden in FORBIDDEN.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            for line, name in imported_names(path):
                if any(_matches(name, f) for f in forbidden):
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert bad == []


def test_nothing_imports_the_application_by_its_folder_path():
    """The application is imported as ``ddrs_app`` (its installed name), never as ``benchmarks.app``,
    which would load a second copy of every module under another name."""
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        if ".git" in path.parts or "results" in path.parts:
            continue
        for line, name in imported_names(path):
            if _matches(name, "benchmarks.app"):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert bad == []


def test_studies_are_imported_by_nothing_but_their_tests():
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if ".git" in path.parts or rel.parts[:2] == ("benchmarks", "studies") or rel.parts[0] == "tests":
            continue
        for line, name in imported_names(path):
            if _matches(name, "benchmarks.studies"):
                bad.append(f"{rel}:{line} imports {name}")
    assert bad == []


def test_tests_mirror_the_packages():
    """Every test module sits in the folder of what it tests (tests/<package>/ for certify, manifolds,
    ddrs, and app, analysis, studies for the three parts of benchmarks/); only cross-cutting tests stay
    at the top."""
    folders = {p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and p.name != "data"}
    assert folders == {"certify", "manifolds", "ddrs", "app", "analysis", "studies"}
    top = sorted(p.name for p in (ROOT / "tests").glob("test_*.py"))
    assert top == ["test_device.py", "test_import_graph.py", "test_import_isolation.py", "test_layout.py"]
    for package in LIBRARY:
        for path in (ROOT / "tests" / package).glob("test_*.py"):
            names = {name.split(".")[0] for _, name in imported_names(path)}
            assert package in names, f"{path.relative_to(ROOT)} does not import {package}"
