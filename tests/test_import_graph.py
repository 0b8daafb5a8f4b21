"""The project's import graph has no circle, and no module imports another module's private names.

Every ``.py`` file of ``certify``, ``manifolds``, ``ddrs`` and ``benchmarks`` is parsed with ``ast``
(nothing is imported). Rules:

* Edges: every ``import`` / ``from ... import`` statement anywhere in a file counts, at module level
  or inside a function, a class, ``if TYPE_CHECKING:`` or ``try:`` (a lazy import that only hides a
  circle from the interpreter is still a circle). ``from P import name`` is an edge to the module
  ``P.name`` when that is a module of the project, else to ``P``. Importing ``a.b.c`` from outside
  the package ``a`` (or ``a.b``) also runs ``a/__init__.py`` (and ``a/b/__init__.py``), so it is an
  edge to those packages as well; a module's own enclosing packages are not added (Python is already
  importing them when it runs the module).
* No circle: the graph over the project's modules has no strongly connected component of two or more
  modules (and no module imports itself).
* No private name across modules: no ``from M import _name``, no ``import`` of a module whose dotted
  path has a component with a leading underscore (``__init__`` aside), and no ``alias._name`` where
  ``alias`` is bound by an import to a module of the project; dunder names are not private.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("certify", "manifolds", "ddrs", "benchmarks")
INSTALLED_AS = ("benchmarks/app", "ddrs_app")  # folder, import name (pyproject.toml's package-dir)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def project_modules(root: Path = ROOT) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package) for every .py file of the four packages."""
    modules: dict[str, tuple[Path, bool]] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            if parts[:2] == [*INSTALLED_AS[0].split("/")]:  # benchmarks/app is installed as ddrs_app
                parts = [INSTALLED_AS[1], *parts[2:]]
            modules[".".join(parts)] = (path, is_package)
    return modules


def _owner(name: str, modules) -> str | None:
    """The longest prefix of the dotted ``name`` that is a project module (None: not the project's)."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        candidate = ".".join(parts[:k])
        if candidate in modules:
            return candidate
    return None


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:k]) for k in range(1, len(parts))]


def _add(edges: set[str], importer: str, target: str | None, modules) -> None:
    """Edge importer -> target, plus the target's packages the importer is not already inside."""
    if target is None:
        return
    enclosing = set(_ancestors(importer)) | {importer}
    for package in _ancestors(target):
        if package in modules and package not in enclosing:
            edges.add(package)
    edges.add(target)


def _dotted(node: ast.expr, aliases: dict[str, str]) -> str | None:
    """The module an expression ``name.attr.attr`` names, with ``name`` bound by an import (else None)."""
    attrs: list[str] = []
    while isinstance(node, ast.Attribute):
        attrs.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in aliases:
        return None
    return ".".join([aliases[node.id], *reversed(attrs)])


class Scan:
    """Edges and private-name findings of one module."""

    def __init__(self, module: str, path: Path, is_package: bool, modules, root: Path) -> None:
        self.module = module
        self.edges: set[str] = set()
        self.private: list[str] = []
        package = module if is_package else module.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        aliases: dict[str, str] = {}  # local name -> project module it is bound to
        where = f"{path.relative_to(root)}"
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = _owner(alias.name, modules)
                    if target is None:
                        continue
                    _add(self.edges, module, target, modules)
                    if any(_is_private(p) for p in alias.name.split(".")):
                        self.private.append(f"{where}:{node.lineno} imports private module {alias.name}")
                    if alias.asname:
                        aliases[alias.asname] = target
                    else:
                        top = alias.name.split(".")[0]
                        if top in modules:
                            aliases[top] = top
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if _owner(source, modules) is None:
                    continue
                if any(_is_private(p) for p in source.split(".")):
                    self.private.append(f"{where}:{node.lineno} imports from private module {source}")
                for alias in node.names:
                    full = f"{source}.{alias.name}"
                    if full in modules:
                        _add(self.edges, module, full, modules)
                        aliases[alias.asname or alias.name] = full
                    else:
                        _add(self.edges, module, _owner(source, modules), modules)
                    if _is_private(alias.name) and _owner(source, modules) != module:
                        self.private.append(f"{where}:{node.lineno} imports private name {alias.name} from {source}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _is_private(node.attr):
                owner = _dotted(node.value, aliases)
                if owner in modules and owner != module:
                    self.private.append(f"{where}:{node.lineno} uses private name {node.attr} of module {owner}")


def import_graph(root: Path = ROOT) -> tuple[dict[str, set[str]], list[str]]:
    """(module -> project modules it imports, private-name findings) over the four packages."""
    modules = project_modules(root)
    graph: dict[str, set[str]] = {}
    private: list[str] = []
    for name, (path, is_package) in modules.items():
        scan = Scan(name, path, is_package, modules, root)
        graph[name] = scan.edges
        private += scan.private
    return graph, private


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    return sorted(c for c in strongly_connected(graph) if len(c) > 1 or c[0] in graph[c[0]])


def test_every_package_is_scanned():
    graph, _ = import_graph()
    for package in (*PACKAGES, "ddrs_app"):
        assert package in graph
    assert "ddrs_app.runs" in graph and "ddrs_app.methods" in graph["ddrs_app.runs"]
    assert "certify.smooth" in graph and "certify.bounds" in graph["certify.smooth"]


def test_no_import_circle():
    graph, _ = import_graph()
    found = circles(graph)
    assert not found, "import circles (strongly connected modules): " + "; ".join(
        " <-> ".join(c) + " [" + ", ".join(f"{a}->{b}" for a in c for b in sorted(graph[a]) if b in c) + "]"
        for c in found
    )


def test_no_private_name_across_modules():
    _, private = import_graph()
    assert not private, "private names used across modules:\n" + "\n".join(private)


# ---------------------------------------------------------------------------- the checker itself
def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for package in PACKAGES:
        (root / package).mkdir(exist_ok=True)
        (root / package / "__init__.py").touch()


@pytest.mark.parametrize(
    "files, circle",
    [
        ({"certify/a.py": "from .b import f\n", "certify/b.py": "def g():\n    from .a import h\n"}, True),
        (
            {
                "certify/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n",
                "certify/b.py": "from . import a\n",
            },
            True,
        ),
        # importing a submodule from outside its package runs the package's __init__
        ({"certify/__init__.py": "from .a import f\n", "certify/a.py": "import ddrs\n", "ddrs/x.py": ""}, False),
        ({"certify/__init__.py": "import ddrs.x\n", "ddrs/x.py": "from certify.bounds import f\n"}, True),
        ({"certify/a.py": "from .b import f\n", "certify/b.py": "import numpy\n"}, False),
    ],
)
def test_checker_finds_circles(tmp_path, files, circle):
    _write(tmp_path, files)
    graph, _ = import_graph(tmp_path)
    assert bool(circles(graph)) is circle


@pytest.mark.parametrize(
    "text, private",
    [
        ("from certify.a import _hidden\n", True),
        ("def f():\n    from .a import _hidden\n", True),
        ("from certify import a as m\nm._hidden()\n", True),
        ("import certify.a\ncertify.a._hidden\n", True),
        ("import certify\ncertify._hidden\n", True),
        ("def f(smooth):\n    return smooth._statistics\n", False),  # an object, not a module
        ("from certify.a import public, __version__\n", False),
        ("import numpy as np\nnp._private\n", False),
    ],
)
def test_checker_finds_private_names(tmp_path, text, private):
    _write(tmp_path, {"certify/a.py": "", "certify/b.py": text})
    _, found = import_graph(tmp_path)
    assert bool(found) is private
