"""Record the Python API surface of real TensorRT bindings, version by version, without a GPU.

Why: the unit tests drive the TensorRT code through a fake ``tensorrt`` module. A fake written
by hand offers whatever its author believed; this script reads what each real release offers,
so the fake (tests/trt_fake.py) is built from it and the contract tests
(tests/test_tensorrt_api_usage.py) check every TensorRT name the code uses against it.

How (docs/DEPLOY_NOTES.md, "Testing against the real TensorRT API without a GPU"): the
``tensorrt-cu12-bindings`` / ``tensorrt-cu13-bindings`` wheels hold the real bindings
(``tensorrt_bindings/tensorrt.so``). That module needs a handful of symbols from three NVIDIA
libraries; this script builds stub libraries with those SONAMEs and symbols (each returns
null) with the machine's C compiler, imports the bindings in a subprocess with the stubs on
``LD_LIBRARY_PATH`` and writes classes, enum members and values, properties and the method
signatures pybind11 puts in the docstrings to ``tests/data/trt_api/<version>.json``.
Nothing can be built with the stubs (``trt.Builder(logger)`` raises TypeError): this is the API
contract of a version, not a runtime.

    python tools/trt_api_surface.py                   # the default versions, into tests/data/trt_api/
    python tools/trt_api_surface.py --versions 11.4.0.106 --out /tmp/api
    python tools/trt_api_surface.py --check-import    # import the newest cached wheel, print its version

Wheels are cached under ``.cache/trt-wheels/`` (gitignored); ``pip download --no-deps`` is the
only network access.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = REPO / ".cache" / "trt-wheels"
DEFAULT_OUT = REPO / "tests" / "data" / "trt_api"
#: Two 10.x before 10.12 (precision flags and calibrators current), two from 10.12 (flags
#: deprecated, strong typing preferred; 10.16.1 is the newest 10.x on the registry), and every
#: 11.x the registry offers (`pip index versions tensorrt-cu12-bindings`, checked 2026-12: 11.0.0,
#: 11.1.0, 11.2.1, 11.3.0, 11.4.0; 11.4 from the CUDA 13 wheel, the others CUDA 12).
DEFAULT_VERSIONS = (
    ("tensorrt-cu12-bindings", "10.3.0"),
    ("tensorrt-cu12-bindings", "10.8.0.43"),
    ("tensorrt-cu12-bindings", "10.13.3.9"),
    ("tensorrt-cu12-bindings", "10.16.1.11"),
    ("tensorrt-cu12-bindings", "11.0.0.114"),
    ("tensorrt-cu12-bindings", "11.1.0.106"),
    ("tensorrt-cu12-bindings", "11.2.1.2"),
    ("tensorrt-cu12-bindings", "11.3.0.99"),
    ("tensorrt-cu13-bindings", "11.4.0.106"),
)
#: Undefined symbols of tensorrt.so that the C library, libstdc++ and the loader provide.
_SYSTEM_SYMBOL = re.compile(r"^(Py|_Py|_ITM_|__gmon_start__|__cxa|__pthread|pthread_|dl(open|sym|close|error)$)")


def wheel_for(dist: str, version: str, cache: Path = DEFAULT_CACHE, download: bool = True) -> Path | None:
    """The cached wheel of ``dist==version`` for this Python, downloading it (no deps) when allowed."""
    cache.mkdir(parents=True, exist_ok=True)
    stem = dist.replace("-", "_")
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    found = sorted(p for p in cache.glob(f"{stem}-{version}-*.whl") if tag in p.name or "py3" in p.name)
    if found or not download:
        return found[0] if found else None
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
           "--dest", str(cache), f"{dist}=={version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        detail = [line for line in proc.stderr.splitlines() if "ERROR" in line][:2]
        raise RuntimeError(f"pip download {dist}=={version} failed: {' '.join(detail) or proc.stderr[-300:]}")
    found = sorted(p for p in cache.glob(f"{stem}-{version}-*.whl") if tag in p.name or "py3" in p.name)
    if not found:
        raise RuntimeError(f"pip download {dist}=={version} wrote no {tag} wheel into {cache}")
    return found[0]


def newest_cached_wheel(cache: Path = DEFAULT_CACHE) -> Path | None:
    """The cached bindings wheel of the highest version for this Python (None: nothing cached)."""
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    wheels = [p for p in cache.glob("tensorrt_cu1*_bindings-*.whl") if tag in p.name] if cache.is_dir() else []

    def key(p: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", p.name.split("-")[1])[:4])

    return max(wheels, key=key) if wheels else None


def _elf_facts(so: Path) -> tuple[list[str], list[str]]:
    """(NVIDIA SONAMEs it needs, undefined symbols none of the system libraries define)."""
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]",
                        subprocess.run(["readelf", "-d", str(so)], capture_output=True, text=True, check=True).stdout)
    nv = [lib for lib in needed if lib.startswith("libnv")]
    out = subprocess.run(["nm", "-D", "--undefined-only", str(so)], capture_output=True, text=True, check=True).stdout
    symbols = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 2 or parts[0] not in ("U", "w"):
            continue
        name = parts[1]
        if "@" in name or _SYSTEM_SYMBOL.match(name):
            continue  # versioned (GLIBC_, CXXABI_, GCC_) or provided by Python / the loader
        symbols.append(name)
    return nv, sorted(set(symbols))


def build_stubs(so: Path, workdir: Path, cc: str | None = None) -> tuple[Path, list[str], list[str]]:
    """Stub libraries (every symbol returns null) for the NVIDIA SONAMEs ``so`` needs -> (folder, sonames, symbols)."""
    cc = cc or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise RuntimeError("no C compiler (cc/gcc) to build the stub NVIDIA libraries")
    sonames, symbols = _elf_facts(so)
    libdir = workdir / "stub-libs"
    libdir.mkdir(parents=True, exist_ok=True)
    source = libdir / "stub.c"
    source.write_text("".join(f"void *{name}(void) {{ return 0; }}\n" for name in symbols))
    for soname in sonames:  # the symbols go into every stub: the loader takes the first it finds
        subprocess.run([cc, "-shared", "-fPIC", "-o", str(libdir / soname), f"-Wl,-soname,{soname}", str(source)],
                       check=True, capture_output=True, timeout=120)
    return libdir, sonames, symbols


def unpack_bindings(wheel: Path, workdir: Path) -> Path:
    """Extract the wheel; returns the folder holding the ``tensorrt_bindings`` package."""
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(workdir / "site")
    if not (workdir / "site" / "tensorrt_bindings").is_dir():
        raise RuntimeError(f"{wheel.name} has no tensorrt_bindings package")
    return workdir / "site"


#: Runs in the child process: import the bindings and print their surface as JSON.
_DUMP = r'''
import json, re, sys
import tensorrt_bindings as trt

PREFIXES = ("tensorrt_bindings.tensorrt.", "tensorrt_bindings.", "tensorrt.")

def clean(text):
    for p in PREFIXES:
        text = text.replace(p, "")
    return " ".join(text.split())

def signatures(name, obj):
    doc = getattr(obj, "__doc__", None) or ""
    sigs = []
    for line in doc.splitlines():
        s = re.sub(r"^\d+\.\s+", "", line.strip())
        if s.startswith(name + "(") and "->" in s:
            sigs.append(clean(s))
    return sigs

def enum_members(cls):
    members = getattr(cls, "__members__", None)
    if not isinstance(members, dict):
        return None
    out = {}
    for k, v in members.items():
        try:
            out[str(k)] = int(v)
        except Exception:
            out[str(k)] = None
    return out

names = {}
for name in sorted(dir(trt)):
    if name.startswith("_"):
        continue
    obj = getattr(trt, name)
    if isinstance(obj, type):
        members = enum_members(obj)
        if members is not None:
            names[name] = {"kind": "enum", "members": members}
            continue
        methods, props = {}, {}
        for attr, value in sorted(vars(obj).items()):
            if attr.startswith("_") and attr not in ("__init__", "__enter__", "__exit__", "__len__", "__getitem__", "__iter__"):
                continue
            if isinstance(value, property):
                props[attr] = "rw" if value.fset is not None else "ro"
            elif isinstance(value, (staticmethod, classmethod)):
                methods[attr] = signatures(attr, value.__func__) or ["(static)"]
            elif callable(value):
                methods[attr] = signatures(attr, value) or ["(python)"]
        bases = [b.__name__ for b in obj.__mro__[1:] if getattr(trt, b.__name__, None) is b]
        names[name] = {"kind": "class", "bases": bases, "methods": methods, "properties": props}
    elif callable(obj):
        names[name] = {"kind": "function", "signatures": signatures(name, obj) or ["(python)"]}
    elif isinstance(obj, (int, float, str, bool)):
        names[name] = {"kind": "value", "value": obj}
    else:
        names[name] = {"kind": "object", "type": type(obj).__name__}
json.dump({"version": str(trt.__version__), "names": names}, sys.stdout, sort_keys=True)
'''


def import_env(libdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = str(libdir) + (os.pathsep + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    env.pop("PYTHONPATH", None)
    return env


def surface_of_wheel(wheel: Path, timeout: float = 120) -> dict:
    """The API surface of one bindings wheel (imported in a subprocess with stub NVIDIA libraries)."""
    with tempfile.TemporaryDirectory(prefix="trt-api-") as tmp:
        work = Path(tmp)
        site = unpack_bindings(wheel, work)
        libdir, sonames, symbols = build_stubs(site / "tensorrt_bindings" / "tensorrt.so", work)
        proc = subprocess.run([sys.executable, "-c", _DUMP], cwd=site, env=import_env(libdir), capture_output=True,
                              text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"importing {wheel.name} with stub libraries failed: {proc.stderr.strip()[-500:]}")
        data = json.loads(proc.stdout)
    dist, version = wheel.name.split("-")[:2]
    data.update({
        "distribution": dist.replace("_", "-"), "wheel": wheel.name,
        "wheel_sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(),
        "needed_libraries": sonames, "stub_symbols": symbols,
    })
    return data


def write_surface(data: dict, out_dir: Path) -> Path:
    """``<out>/<major.minor.patch>.json``: one name per line so diffs between versions read well."""
    out_dir.mkdir(parents=True, exist_ok=True)
    version = ".".join(data["version"].split(".")[:3])
    path = out_dir / f"{version}.json"
    head = {k: v for k, v in data.items() if k != "names"}
    lines = ["{"] + [f" {json.dumps(k)}: {json.dumps(v, sort_keys=True)}," for k, v in sorted(head.items())]
    lines.append(' "names": {')
    entries = [f"  {json.dumps(k)}: {json.dumps(v, sort_keys=True, separators=(',', ':'))}" for k, v in sorted(data["names"].items())]
    lines.append(",\n".join(entries))
    lines += [" }", "}"]
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    json.loads(tmp.read_text())  # never commit a file that does not parse
    tmp.replace(path)
    return path


def check_import(wheel: Path, code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``code`` in a subprocess that can ``import tensorrt_bindings`` of ``wheel`` (stub libraries)."""
    tmp = tempfile.mkdtemp(prefix="trt-import-")
    try:
        work = Path(tmp)
        site = unpack_bindings(wheel, work)
        libdir, _, _ = build_stubs(site / "tensorrt_bindings" / "tensorrt.so", work)
        env = import_env(libdir)
        env["PYTHONPATH"] = str(site) + os.pathsep + str(REPO)
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout,
                              cwd=str(REPO))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", nargs="*", help="versions to record (DIST==VERSION or VERSION for cu12); default: the supported set")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for <version>.json")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="wheel cache (gitignored)")
    parser.add_argument("--offline", action="store_true", help="use cached wheels only")
    parser.add_argument("--check-import", action="store_true", help="import the newest cached wheel and print its version")
    args = parser.parse_args(argv)
    if args.check_import:
        wheel = newest_cached_wheel(args.cache)
        if wheel is None:
            print(f"no bindings wheel cached under {args.cache}", file=sys.stderr)
            return 1
        proc = check_import(wheel, "import tensorrt_bindings as t; print(t.__version__)")
        print(proc.stdout.strip() or proc.stderr.strip()[-300:])
        return proc.returncode
    wanted = []
    for spec in args.versions or [f"{d}=={v}" for d, v in DEFAULT_VERSIONS]:
        dist, _, version = spec.rpartition("==")
        wanted.append((dist or "tensorrt-cu12-bindings", version))
    failed = 0
    for dist, version in wanted:
        try:
            wheel = wheel_for(dist, version, args.cache, download=not args.offline)
            if wheel is None:
                raise RuntimeError(f"{dist}=={version} is not cached in {args.cache} (--offline)")
            data = surface_of_wheel(wheel)
            path = write_surface(data, args.out)
        except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
            failed += 1
            print(f"{dist}=={version}: FAILED: {exc}", file=sys.stderr)
            continue
        kinds: dict[str, int] = {}
        for entry in data["names"].values():
            kinds[entry["kind"]] = kinds.get(entry["kind"], 0) + 1
        print(f"{dist}=={version}: {data['version']} -> {path.relative_to(REPO) if path.is_relative_to(REPO) else path} "
              f"({path.stat().st_size // 1024} KiB; {', '.join(f'{v} {k}s' for k, v in sorted(kinds.items()))})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
