"""Every third-party module the tree imports is declared in pyproject.toml (core, an extra or dev).

A fresh virtualenv gets only what pyproject.toml declares, so an import that works here only
because a package happens to be installed on this machine is a bug this test catches. Every
``import`` counts: module level or inside a function, ``importlib.import_module("x")``,
``pytest.importorskip("x")``, ``__import__("x")``, and Python code held in a string that a test or
tool runs in a child interpreter.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
#: The folders whose Python files are walked.
FOLDERS = ("maxq_deploy", "cli", "tests", "benchmarks", "examples", "tools")

#: Import name -> distribution, where the two differ.
DISTRIBUTION_OF = {
    "PIL": "pillow",
    "sklearn": "scikit-learn",
    "google": "protobuf",  # google.protobuf
    "absl": "absl-py",
    "yaml": "pyyaml",
    "modelopt": "nvidia-modelopt",
}

#: Imported, deliberately not declared, and why.
NOT_DECLARED = {
    "tensorrt": "installed by the user from NVIDIA's index on a CUDA machine (10.x or 11.x); no "
                "registry wheel works without NVIDIA's libraries, so no extra can carry it",
    "tensorrt_bindings": "the registry's tensorrt-cu12/cu13-bindings wheels, fetched on purpose by "
                         "tools/trt_api_surface.py into .cache/ and imported only in a child process "
                         "with stub NVIDIA libraries",
    "click": "only the fallback of cli/render.py for Typer < 0.24, which requires Click itself "
             "(newer Typer vendors it as typer._click)",
}


def normalize(name: str) -> str:
    """PEP 503 name normalization."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_distributions() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements.extend(extra)
    names = {normalize(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", req.strip()).group(0)) for req in requirements}
    return names - {"maxq-deploy"}


def _string_code(node: ast.Constant) -> ast.AST | None:
    """Python source held in a string (run with ``python -c`` or written to a file), if it is some."""
    if not isinstance(node.value, str) or "import " not in node.value:
        return None
    try:
        tree = ast.parse(node.value)
    except (SyntaxError, ValueError):
        return None
    return tree if any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(tree)) else None


def imported_modules(tree: ast.AST) -> set[str]:
    """Top-level names of every absolute import in ``tree``, lazy and string ones included."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            arg = node.args[0]
            if name in ("import_module", "importorskip", "__import__") and isinstance(arg, ast.Constant) \
                    and isinstance(arg.value, str) and not arg.value.startswith("."):
                found.add(arg.value.split(".")[0])
        elif isinstance(node, ast.Constant):
            inner = _string_code(node)
            if inner is not None:
                found |= imported_modules(inner)
    return found


def is_local(module: str, path: Path) -> bool:
    """The project itself, or a module beside the importing file (tests/, benchmarks/ helpers)."""
    if module in ("maxq_deploy", "cli"):
        return True
    return (path.parent / f"{module}.py").is_file() or (path.parent / module / "__init__.py").is_file()


def third_party_imports() -> dict[str, set[str]]:
    """Third-party top-level module -> the files (relative) that import it."""
    stdlib = set(sys.stdlib_module_names)
    out: dict[str, set[str]] = {}
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for module in imported_modules(ast.parse(path.read_text(), filename=str(path))):
                if module in stdlib or module == "__future__" or is_local(module, path):
                    continue
                out.setdefault(module, set()).add(str(path.relative_to(ROOT)))
    return out


def test_the_walk_sees_lazy_and_string_imports() -> None:
    code = (
        "def f():\n    import torch.nn\n    from PIL import Image\n"
        "importlib.import_module('onnxruntime.quantization')\npytest.importorskip('sklearn')\n"
        "CODE = 'import json\\nimport tensorrt_bindings as t\\n'\nfrom . import sibling\n"
    )
    assert imported_modules(ast.parse(code)) == {"torch", "PIL", "onnxruntime", "sklearn", "json", "tensorrt_bindings"}


def test_every_third_party_import_is_declared() -> None:
    declared = declared_distributions()
    found = third_party_imports()
    assert {"torch", "numpy", "onnx", "pytest", "hypothesis"} <= set(found), sorted(found)  # the walk works
    missing = {
        module: sorted(files) for module, files in found.items()
        if module not in NOT_DECLARED and normalize(DISTRIBUTION_OF.get(module, module)) not in declared
    }
    assert not missing, "imported but not declared in pyproject.toml (core, an extra or dev): " + "; ".join(
        f"{m} (distribution {DISTRIBUTION_OF.get(m, m)}) in {', '.join(files[:3])}" for m, files in sorted(missing.items())
    )


def test_every_undeclared_exception_is_still_imported() -> None:
    found = third_party_imports()
    assert not set(NOT_DECLARED) - set(found), "NOT_DECLARED lists a module nothing imports any more"
