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

#: The stage order, bottom to top; a module may import its own level or lower ones.
LEVELS: list[tuple[str, ...]] = [
    ("maxq_deploy", "maxq_deploy.errors", "maxq_deploy.progress", "maxq_deploy.artifacts", "maxq_deploy.formats",
     "maxq_deploy.onnx_meta", "maxq_deploy.compare", "maxq_deploy.devices", "maxq_deploy.distributed", "maxq_deploy.memory",
     "maxq_deploy.cpu_isa"),
    ("maxq_deploy.sparsity", "maxq_deploy.arch_catalog", "maxq_deploy.image_decode", "maxq_deploy.data"),
    ("maxq_deploy.archs",),
    ("maxq_deploy.reference", "maxq_deploy.artifact_checks"),
    ("maxq_deploy.checkpoint",),
    ("maxq_deploy.models", "maxq_deploy.input_size"),
    ("maxq_deploy.fold",),
    ("maxq_deploy.verify",),
    ("maxq_deploy.semi_structured", "maxq_deploy.runtimes"),
    ("maxq_deploy.evaluate",),
    ("maxq_deploy.quantize",),
    ("maxq_deploy.onnx_graph", "maxq_deploy.onnx_edit", "maxq_deploy.qdq_check", "maxq_deploy.ort_qdq",
     "maxq_deploy.export_ort_checkpoint", "maxq_deploy.onnx_sparsity", "maxq_deploy.export_onnx",
     "maxq_deploy.export_ort", "maxq_deploy.int8_divergence"),
    ("maxq_deploy.tensorrt",),
    ("maxq_deploy.bench",),
    ("maxq_deploy.demo",),
    ("maxq_deploy.cli", "maxq_deploy.__main__"),
]


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
