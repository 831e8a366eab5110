"""The package's shape: stages import only stages below them, no cycles, no oversized modules.

Every ``import`` counts, at module level or inside a function (lazy imports too): a lazy import
of a higher stage is still a dependency. Plugins named by string (``verify._PLUGIN_MODULES``,
``formats.FORMATS`` loaders, ``runtimes.select.OPENERS``) are the one sanctioned way up.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 600

#: The stage order, bottom to top: one package (or top-level module) per stage; a module may
#: import its own level or lower ones. DEVELOPING.md points here instead of copying the table.
LEVELS: list[tuple[str, ...]] = [
    ("maxq_deploy", "maxq_deploy.core"),  # errors, progress, files, sparsity arithmetic, compare, devices, torchrun
    ("maxq_deploy.data", "maxq_deploy.archs", "maxq_deploy.onnx_graph"),  # data sets; architectures; reading ONNX
    ("maxq_deploy.reference", "maxq_deploy.load"),  # MaxQ reference layers; every artifact loader, input size
    ("maxq_deploy.fold",),
    ("maxq_deploy.verify",),
    ("maxq_deploy.runtimes",),
    ("maxq_deploy.evaluate", "maxq_deploy.sensitivity"),  # accuracy; per-layer 2:4 / INT8 cost
    ("maxq_deploy.quantize",),
    ("maxq_deploy.export",),
    ("maxq_deploy.tensorrt",),
    ("maxq_deploy.bench",),
    ("maxq_deploy.demo",),
    ("maxq_deploy.cli", "maxq_deploy.__main__"),
]
#: The package graph (a package or top-level module is one node) stays small and shallow.
MAX_NODES, MAX_DEPTH = 20, 10


def module_files() -> dict[str, Path]:
    """Module name -> file, with ``cli/`` installed as ``maxq_deploy.cli``."""
    out: dict[str, Path] = {}
    for base, prefix in ((ROOT / "maxq_deploy", "maxq_deploy"), (ROOT / "cli", "maxq_deploy.cli")):
        for path in base.rglob("*.py"):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([prefix, *parts])] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules that ``name`` imports anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                full = f"{target}.{alias.name}"
                found.add(full if full in known else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in known and m != name}


def level_of(module: str) -> int:
    best, best_len = -1, -1
    for index, prefixes in enumerate(LEVELS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    return best


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    return {name: imports_of(name, path, known) for name, path in files.items()}


def test_every_module_has_a_stage(graph: dict[str, set[str]]) -> None:
    assert [m for m in graph if level_of(m) < 0] == []


def test_no_module_imports_a_higher_stage(graph: dict[str, set[str]]) -> None:
    upward = sorted(
        f"{m} (level {level_of(m)}) imports {d} (level {level_of(d)})"
        for m, deps in graph.items() for d in deps if level_of(d) > level_of(m)
    )
    assert upward == []


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    # A package __init__ that re-exports its own submodules is not a cycle of stages: edges from
    # a package to its children and from children to their package are left out.
    def related(a: str, b: str) -> bool:
        return a.startswith(b + ".") or b.startswith(a + ".")

    edges = {m: {d for d in deps if not related(m, d)} for m, deps in graph.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(edges[node]):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    assert cycles == []


def test_no_library_module_is_oversized() -> None:
    big = {str(p.relative_to(ROOT)): n for p in (ROOT / "maxq_deploy").rglob("*.py")
           if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert big == {}


def test_bench_modules_are_small() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in (ROOT / "maxq_deploy" / "bench").glob("*.py")}
    assert sizes and max(sizes.values()) <= 300, sizes


def _node(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def test_package_graph_is_small_shallow_and_acyclic(graph: dict[str, set[str]]) -> None:
    """Counted in packages: at most MAX_NODES nodes, the longest import chain at most MAX_DEPTH edges."""
    edges: dict[str, set[str]] = {}
    for module, deps in graph.items():
        edges.setdefault(_node(module), set()).update(_node(d) for d in deps if _node(d) != _node(module))
    assert len(edges) <= MAX_NODES, sorted(edges)
    longest: dict[str, int] = {}

    def depth(node: str, path: tuple[str, ...]) -> int:
        assert node not in path, f"package cycle: {' -> '.join((*path, node))}"
        if node not in longest:
            longest[node] = max((1 + depth(dep, (*path, node)) for dep in edges.get(node, ())), default=0)
        return longest[node]

    assert max(depth(node, ()) for node in edges) <= MAX_DEPTH


def test_every_package_is_installed() -> None:
    """pyproject.toml lists every package of the tree (a wheel would silently leave one out)."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"maxq_deploy." + ".".join(p.parent.relative_to(ROOT / "maxq_deploy").parts) if p.parent != ROOT / "maxq_deploy"
             else "maxq_deploy" for p in (ROOT / "maxq_deploy").rglob("__init__.py")} | {"maxq_deploy.cli"}
    assert listed == found


def test_every_library_module_has_its_test_file() -> None:
    """Tests mirror the library by name: ``maxq_deploy/<pkg>/<mod>.py`` -> ``tests/test_<pkg>_<mod>.py``, a non-empty
    package ``__init__`` -> ``tests/test_<pkg>.py``, a top-level module -> ``tests/test_<mod>.py``."""
    tests = {p.stem for p in (ROOT / "tests").glob("test_*.py")}
    modules = set()
    for path in (ROOT / "maxq_deploy").rglob("*.py"):
        parts = list(path.relative_to(ROOT / "maxq_deploy").with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts and parts != ["__main__"] and path.read_text().strip():
            modules.add(".".join(parts))
    without = {m for m in modules if "test_" + m.replace(".", "_") not in tests}
    assert sorted(without) == []  # a new module comes with its test file
