"""A fake ``tensorrt`` module built from the recorded API surface of a real release.

``tests/data/trt_api/<version>.json`` (written by ``tools/trt_api_surface.py`` from the real
bindings) decides what exists: every class, enum member, method and property of the fake must be
in that version's surface, so the fake cannot offer a name the real version lacks (a missing one
raises AttributeError like the real module). Behaviour is modelled only where the code depends on
it, and like the real thing:

* the engine inspector prints every tensor format as "N/A due to dynamic shapes" unless an
  execution context whose input shapes are all set was given to it (``execution_context``);
* ``create_timing_cache`` returns None for a cache another version/GPU wrote (``FOREIGN_CACHE``),
  ``set_timing_cache`` returns False for one it deserialized but will not take (``REFUSED_CACHE``),
  and ``set_timing_cache(None, ...)`` raises TypeError (pybind11 rejects a null reference);
* TensorRT keeps the first logger handed to a builder or runtime and logs a warning through it
  when another one comes later;
* layer names are whatever the test's inspector JSON says (fused reformat names included).

Every attribute the code reads on a fake object is recorded in ``trt.used`` (``"Class.member"``),
so a test can check the code's use of TensorRT against the declared list and the real surfaces.
"""

from __future__ import annotations

import copy
import json
import types
from pathlib import Path
from typing import Any, Callable

SURFACE_DIR = Path(__file__).resolve().parent / "data" / "trt_api"
DYNAMIC_FORMAT = "N/A due to dynamic shapes"
LOGGER_DIFFERS = ("The logger passed into createInferRuntime differs from one already provided for an existing builder, "
                  "runtime, or refitter. Uses of the global logger, returned by nvinfer1::getLogger(), will return the "
                  "existing value.")
#: Bytes a timing cache of another TensorRT version / GPU starts with (in these tests):
#: ``create_timing_cache`` returns None for it.
FOREIGN_CACHE = b"TIMING-CACHE-OF-ANOTHER-GPU"
#: A cache TensorRT deserializes but will not take: ``set_timing_cache(cache, False)`` returns False
#: (the header names another GPU; ``ignore_mismatch=False``).
REFUSED_CACHE = b"TIMING-CACHE-REFUSED-BY-SET"
NUM_CLASSES = 10  # classes of the fake engine's output
SEVERITIES = {"INTERNAL_ERROR": 0, "ERROR": 1, "WARNING": 2, "INFO": 3, "VERBOSE": 4}


def recorded_versions() -> list[str]:
    """Versions with a recorded surface, oldest first (``10.3.0``, ..., ``11.4.0``)."""
    return sorted((p.stem for p in SURFACE_DIR.glob("*.json")), key=lambda v: tuple(int(x) for x in v.split(".")))


def load_surface(version: str) -> dict:
    """The recorded surface for ``version``: its own file, else the nearest older one of its major."""
    key = tuple(int(x) for x in version.split(".")[:3] if x.isdigit())
    versions = recorded_versions()
    same_major = [v for v in versions if int(v.split(".")[0]) == key[0]]
    if not same_major:
        raise LookupError(f"no recorded TensorRT API surface for {version} (have {versions})")
    older = [v for v in same_major if tuple(int(x) for x in v.split(".")) <= key]
    chosen = older[-1] if older else same_major[0]
    return json.loads((SURFACE_DIR / f"{chosen}.json").read_text())


def members_of(names: dict, cls: str) -> tuple[set[str], dict[str, str]]:
    """(methods, properties) of a class including its bases, from a surface's ``names``."""
    methods: set[str] = set()
    props: dict[str, str] = {}
    for name in [cls, *names.get(cls, {}).get("bases", [])]:
        entry = names.get(name, {})
        methods.update(entry.get("methods", {}))
        for prop, mode in entry.get("properties", {}).items():
            props.setdefault(prop, mode)
    return methods, props


def _split_params(text: str) -> list[str]:
    """``"self: A, b: list[int, int] = <E.X: 0>"`` -> top-level comma-separated pieces."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[(<{":
            depth += 1
        elif ch in "])>}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


def parse_signature(sig: str) -> list[tuple[str, str, bool]] | None:
    """A recorded pybind11 signature -> [(name, annotation, has_default)] without ``self`` (None: not parsable)."""
    head = sig.split("(", 1)
    if len(head) != 2 or not head[0] or ")" not in head[1]:
        return None
    inner = head[1].rsplit(") ->", 1)[0] if ") ->" in head[1] else head[1].rsplit(")", 1)[0]
    params = []
    for piece in _split_params(inner):
        if piece in ("*args", "**kwargs"):
            return None
        name, _, rest = piece.partition(":")
        annotation, _, default = rest.partition("=")
        params.append((name.strip(), annotation.strip(), bool(default.strip())))
    if params and params[0][0] == "self":
        params = params[1:]
    return params


def _fits(value: Any, annotation: str, has_default: bool, names: dict) -> bool:
    """Whether pybind11 would accept ``value`` for a parameter annotated ``annotation`` (argument kinds only)."""
    ann = annotation.replace("typing.", "").replace("typing_extensions.", "")
    if value is None:
        return has_default  # pybind11 takes None only where the default is None (or the type is optional)
    if ann == "str":
        return isinstance(value, str)
    if ann == "bool":
        return isinstance(value, bool)
    if ann in ("int", "SupportsInt"):
        return not isinstance(value, (str, bytes, float)) and hasattr(value, "__int__") and not isinstance(value, _Value)
    if ann in ("float", "SupportsFloat"):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if ann in ("buffer", "Buffer"):
        return isinstance(value, (bytes, bytearray, memoryview))
    if ann == "tuple":
        return isinstance(value, tuple)
    if ann == "list" or ann.startswith("list["):
        return isinstance(value, list)
    if ann == "Dims" or ann.startswith("Dims"):
        return isinstance(value, (tuple, list)) and all(isinstance(d, int) for d in value)
    short = ann.split(".")[-1]
    entry = names.get(ann) or names.get(short)
    if isinstance(value, _Value):
        return value.enum == short
    if entry is not None and entry.get("kind") == "enum":
        return False  # an enum parameter given something else (pybind11 enums take no ints)
    if entry is not None and entry.get("kind") == "class":
        if short == "ILogger":
            return hasattr(value, "log")
        cls = getattr(value, "_cls", None)
        return cls == short or (cls is not None and short in names.get(cls, {}).get("bases", []))
    return True  # an annotation this check does not model


class SignatureError(TypeError):
    """A call the real binding would reject (pybind11: "incompatible function arguments")."""


def check_call(names: dict, cls: str, method: str, signatures: list[str], args: tuple, kwargs: dict) -> None:
    """Raise :class:`SignatureError` unless one recorded overload of ``cls.method`` takes these arguments."""
    parsed = [parse_signature(sig) for sig in signatures]
    if not parsed or any(p is None for p in parsed):
        return  # "(python)" / "(static)": nothing recorded to check against
    for params in parsed:
        if len(args) > len(params):
            continue
        given = dict(zip([p[0] for p in params], args))
        if set(given) & set(kwargs) or set(kwargs) - {p[0] for p in params}:
            continue
        given.update(kwargs)
        if any(not has_default and name not in given for name, _ann, has_default in params):
            continue
        if all(_fits(given[name], ann, has_default, names) for name, ann, has_default in params if name in given):
            return
    shown = ", ".join([*(type(a).__name__ for a in args), *(f"{k}={type(v).__name__}" for k, v in kwargs.items())])
    raise SignatureError(f"{cls}.{method}(): incompatible function arguments ({shown}); supported: " + " | ".join(signatures))


class _Value:
    """An enum member: ``int()``, ``.name``, hashable, compares by value within its enum."""

    def __init__(self, enum: str, name: str, value: int):
        self.enum, self.name, self.value = enum, name, value

    def __int__(self) -> int:
        return self.value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Value) and (other.enum, other.value) == (self.enum, self.value)

    def __hash__(self) -> int:
        return hash((self.enum, self.value))

    def __repr__(self) -> str:
        return f"<{self.enum}.{self.name}: {self.value}>"


def _enum(name: str, members: dict[str, int]) -> type:
    values = {k: _Value(name, k, v) for k, v in members.items()}
    return type(name, (), {"__members__": values, **values})


class _Restricted:
    """Base of the fake classes: only names of the real surface exist; reads are recorded."""

    _cls = ""
    _methods: set[str] = set()
    _props: dict[str, str] = {}
    _module: Any = None

    def __getattribute__(self, item: str) -> Any:
        if item.startswith("_"):
            return object.__getattribute__(self, item)
        cls = object.__getattribute__(self, "_cls")
        if item not in object.__getattribute__(self, "_methods") and item not in object.__getattribute__(self, "_props"):
            raise AttributeError(f"'{cls}' object has no attribute '{item}' (not in TensorRT "
                                 f"{object.__getattribute__(self, '_module').__version__})")
        object.__getattribute__(self, "_module").used.add(f"{cls}.{item}")
        return object.__getattribute__(self, item)

    def __setattr__(self, key: str, value: Any) -> None:
        if not key.startswith("_"):
            mode = object.__getattribute__(self, "_props").get(key)
            if mode != "rw":
                raise AttributeError(f"'{self._cls}' property '{key}' is {'read-only' if mode else 'not defined'}")
            self._module.used.add(f"{self._cls}.{key}")
        object.__setattr__(self, key, value)


def _stored_property(attr: str) -> property:
    """A read/write property of a fake class kept in ``attr`` (``_Restricted.__setattr__`` checks the write first)."""
    return property(lambda self: object.__getattribute__(self, attr), lambda self, value: object.__setattr__(self, attr, value))


def fake_tensorrt(version: str, inspector: dict | Callable[[], dict], *, parse_ok: bool = True, build_ok: bool = True,
                  static_shapes: bool = False) -> types.ModuleType:
    """The ``tensorrt`` module of ``version`` as far as the code uses it (see the module doc).

    ``inspector``: the engine's layer information as TensorRT prints it with a context whose
    shapes are set; without such a context the formats read "N/A due to dynamic shapes" (unless
    ``static_shapes``). ``trt.calls`` records what the build configured, ``trt.loggers`` every
    logger given to a builder/runtime/parser.
    """
    surface = load_surface(version)
    names = surface["names"]
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = calls = {}
    trt.used = set()  # every member read on a fake object ("Class.member")
    trt.called = set()  # every method called, after its arguments passed the recorded signatures
    trt.loggers = []
    trt.surface_version = surface["version"]
    for name, entry in names.items():
        if entry["kind"] == "enum":
            setattr(trt, name, _enum(name, entry["members"]))

    def signatures_of(cls_name: str, method: str) -> list[str]:
        for name in [cls_name, *names.get(cls_name, {}).get("bases", [])]:
            sigs = names.get(name, {}).get("methods", {}).get(method)
            if sigs:
                return sigs
        return []

    def enforced(cls_name: str, method: str, func: Callable) -> Callable:
        """``func`` refusing any call the recorded signatures of ``cls_name.method`` reject; calls are recorded."""
        sigs = signatures_of(cls_name, method)

        def call(self, *args, **kwargs):
            check_call(names, cls_name, method, sigs, args, kwargs)
            trt.called.add(f"{cls_name}.{method}")
            return func(self, *args, **kwargs)

        call.__name__ = method
        return call

    def restricted(cls_name: str, impl: type) -> type:
        if cls_name not in names or names[cls_name]["kind"] != "class":
            raise AttributeError(f"module 'tensorrt' {version} has no class {cls_name}")
        methods, props = members_of(names, cls_name)
        extra = {k for k in vars(impl) if not k.startswith("_") and k not in methods and k not in props}
        if extra:  # a bug in this fake: it would offer names the real version lacks
            raise AssertionError(f"fake {cls_name} defines {sorted(extra)}, absent from TensorRT {version}")
        wrapped = {k: enforced(cls_name, k, v) for k, v in vars(impl).items()
                   if callable(v) and not isinstance(v, (property, type)) and (k in methods) and (not k.startswith("_") or k == "__init__")}
        return type(cls_name, (impl, _Restricted), {"_cls": cls_name, "_methods": methods, "_props": props, "_module": trt,
                                                     **wrapped})

    registered: list[Any] = []

    def register_logger(logger: Any, factory: str) -> None:
        trt.loggers.append(logger)
        if not registered:
            registered.append(logger)
        elif registered[0] is not logger:
            registered[0].log(trt.ILogger.Severity.WARNING, LOGGER_DIFFERS.replace("createInferRuntime", factory))

    # --- logger ------------------------------------------------------------------------------
    ilogger_methods, _ = members_of(names, "ILogger")
    assert {"__init__", "log"} <= ilogger_methods, "ILogger.__init__/log missing from the surface"

    class ILogger:  # subclassed by the code: not restricted, but only real members are defined
        Severity = _enum("Severity", SEVERITIES)

        def __init__(self) -> None:
            pass

    trt.ILogger = ILogger

    # --- network and parser ------------------------------------------------------------------
    class ITensor:
        def __init__(self, name: str):
            object.__setattr__(self, "_name", name)

        @property
        def name(self) -> str:
            return self._name

    class INetworkDefinition:
        def __init__(self, flags: int):
            calls["network_flags"] = flags

        @property
        def num_inputs(self) -> int:
            return 1

        def get_input(self, index: int):
            return Tensor("input")

    class ParserError:
        def node_name(self) -> str:
            return "layer1.0.convbn1"

        def desc(self) -> str:
            return "Unsupported   operator\nFancyConv"

    class OnnxParser:
        def __init__(self, network, logger):
            trt.loggers.append(logger)

        @property
        def num_errors(self) -> int:
            return 0 if parse_ok else 1

        def parse_from_file(self, path: str) -> bool:
            calls["parsed"] = path
            return parse_ok

        def get_error(self, index: int):
            return PError()

    # --- builder config, timing cache, profile -----------------------------------------------
    class IHostMemory(bytes):
        pass

    class ITimingCache:
        def __init__(self, data: bytes):
            object.__setattr__(self, "_data", bytes(data))

        def serialize(self):
            return HostMemory(self._data + b"+new")

    class IOptimizationProfile:
        def set_shape(self, input, min, opt, max) -> None:  # noqa: A002 - the real keyword names
            object.__setattr__(self, "_shapes", (input, tuple(min), tuple(opt), tuple(max)))

    class IBuilderConfig:
        profiling_verbosity = _stored_property("_verbosity")

        def __init__(self) -> None:
            calls["flags"] = []
            object.__setattr__(self, "_cache", None)
            object.__setattr__(self, "_verbosity", None)

        def set_memory_pool_limit(self, pool, pool_size: int) -> None:
            calls["workspace"] = (pool.name, pool_size)

        def set_flag(self, flag) -> None:
            calls["flags"].append(flag.name)

        def add_optimization_profile(self, profile) -> int:
            calls["profile"] = profile._shapes
            object.__setattr__(self, "_profile", profile._shapes)
            return 0

        def create_timing_cache(self, serialized_timing_cache: bytes):
            data = bytes(serialized_timing_cache)
            calls.setdefault("timing_caches", []).append(data)
            return None if data.startswith(FOREIGN_CACHE) else TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch: bool) -> bool:
            if cache is None:  # what pybind11 does with None for a C++ reference
                raise TypeError("set_timing_cache(): incompatible function arguments. The following argument types "
                                "are supported:\n    1. (self: tensorrt.IBuilderConfig, cache: tensorrt.ITimingCache, "
                                "ignore_mismatch: bool) -> bool")
            if cache._data.startswith(REFUSED_CACHE) and not ignore_mismatch:
                calls.setdefault("refused_caches", []).append(cache._data)
                return False
            object.__setattr__(self, "_cache", cache)
            return True

        def get_timing_cache(self):
            return self._cache

    class Builder:
        def __init__(self, logger):
            register_logger(logger, "createInferBuilder")
            object.__setattr__(self, "_logger", logger)

        def create_network(self, flags: int = 0):
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calls["verbosity"] = config._verbosity.name
            logger = registered[0]  # TensorRT logs to the first logger it was given
            for line in inspector_data().get("_sparsity_log", []):
                logger.log(ILogger.Severity.INFO, line)
            logger.log(ILogger.Severity.VERBOSE, "chatter")
            logger.log(ILogger.Severity.WARNING, "a warning")
            if not build_ok:
                logger.log(ILogger.Severity.ERROR, "out of workspace")
                return None
            calls["engine_profile"] = config._profile
            return HostMemory(b"ENGINE-BYTES")

    # --- runtime, engine, context, inspector -------------------------------------------------
    def inspector_data() -> dict:
        return copy.deepcopy(inspector() if callable(inspector) else inspector)

    class IExecutionContext:
        def __init__(self, engine) -> None:
            object.__setattr__(self, "_shapes", {})
            object.__setattr__(self, "_engine", engine)

        def set_input_shape(self, name: str, shape) -> bool:
            lo, _opt, hi = self._engine._bounds
            shape = tuple(int(d) for d in shape)
            if len(shape) != len(lo) or any(not (a <= s <= b) for s, a, b in zip(shape, lo, hi)):
                return False
            self._shapes[name] = shape
            return True

        def get_tensor_shape(self, name: str):
            if name == "input":
                return self._shapes.get("input", tuple(self._engine.get_tensor_shape("input")))
            batch = self._shapes["input"][0] if "input" in self._shapes else -1
            return (batch, NUM_CLASSES)

        def set_tensor_address(self, name: str, memory: int) -> bool:
            self._shapes.setdefault("_addresses", {})[name] = int(memory)
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            """The engine's "model": logits[b, k] = (k + 1) * mean(input[b]), written at the output address."""
            import ctypes

            import numpy as np

            addresses = self._shapes.get("_addresses", {})
            if "input" not in self._shapes or not {"input", "output"} <= set(addresses):
                return False  # TensorRT: an input shape or a tensor address was not set
            calls["executed_on_stream"] = stream_handle
            shape = self._shapes["input"]
            count = int(np.prod(shape))
            x = np.ctypeslib.as_array((ctypes.c_float * count).from_address(addresses["input"])).reshape(shape)
            out = np.ctypeslib.as_array((ctypes.c_float * (shape[0] * NUM_CLASSES)).from_address(addresses["output"]))
            logits = x.reshape(shape[0], -1).mean(axis=1, keepdims=True) * np.arange(1, NUM_CLASSES + 1, dtype=np.float32)
            out[:] = logits.astype(np.float32).ravel()
            return True

    class EngineInspector:
        execution_context = _stored_property("_context")

        def __init__(self, engine) -> None:
            object.__setattr__(self, "_engine", engine)
            object.__setattr__(self, "_context", None)

        def get_engine_information(self, format) -> str:  # noqa: A002 - the real keyword name
            calls["inspector_format"] = format.name
            data = inspector_data()
            data.pop("_sparsity_log", None)
            shapes_known = static_shapes or (self._context is not None and "input" in self._context._shapes)
            batch = self._context._shapes["input"][0] if self._context is not None and "input" in self._context._shapes else None
            for layer in data.get("Layers", []):
                if not isinstance(layer, dict):
                    continue
                for tensor in (layer.get("Inputs") or []) + (layer.get("Outputs") or []):
                    if not shapes_known:  # 10.x: the one Format/Datatype field; 11.x: its Format (DataType kept)
                        tensor["Format/Datatype" if "Format/Datatype" in tensor else "Format"] = DYNAMIC_FORMAT
                    elif batch is not None and isinstance(tensor.get("Dimensions"), list) and tensor["Dimensions"][:1] == [-1]:
                        tensor["Dimensions"] = [batch, *tensor["Dimensions"][1:]]
            calls["inspected_with_shapes"] = shapes_known
            return json.dumps(data)

    class ICudaEngine:
        def __init__(self, bounds) -> None:
            object.__setattr__(self, "_bounds", bounds)

        @property
        def num_io_tensors(self) -> int:
            return 2

        def get_tensor_name(self, index: int) -> str:
            return ("input", "output")[index]

        def get_tensor_mode(self, name: str):
            return trt.TensorIOMode.INPUT if name == "input" else trt.TensorIOMode.OUTPUT

        def get_tensor_profile_shape(self, name: str, profile_index: int):
            return [list(b) for b in self._bounds]

        def create_execution_context(self, strategy=None):
            return Context(self)

        def get_tensor_dtype(self, name: str):
            return trt.DataType.FLOAT

        def get_tensor_shape(self, name: str):
            return (-1, *self._bounds[0][1:]) if name == "input" else (-1, NUM_CLASSES)

        def create_engine_inspector(self):
            return Inspector(self)

    class Runtime:
        def __init__(self, logger):
            register_logger(logger, "createInferRuntime")

        def deserialize_cuda_engine(self, serialized_engine):
            calls["deserialized"] = bytes(serialized_engine)
            profile = calls.get("engine_profile", ("input", (1, 3, 16, 16), (8, 3, 16, 16), (32, 3, 16, 16)))
            return Engine((profile[1], profile[2], profile[3]))

    Tensor = restricted("ITensor", ITensor)
    Network = restricted("INetworkDefinition", INetworkDefinition)
    PError = restricted("ParserError", ParserError)
    HostMemory = type("IHostMemory", (IHostMemory,), {})  # bytes subclass: the real one is a buffer too
    assert "IHostMemory" in names
    TimingCache = restricted("ITimingCache", ITimingCache)
    Profile = restricted("IOptimizationProfile", IOptimizationProfile)
    Config = restricted("IBuilderConfig", IBuilderConfig)
    Context = restricted("IExecutionContext", IExecutionContext)
    Inspector = restricted("EngineInspector", EngineInspector)
    Engine = restricted("ICudaEngine", ICudaEngine)
    trt.Builder = restricted("Builder", Builder)
    trt.OnnxParser = restricted("OnnxParser", OnnxParser)
    trt.Runtime = restricted("Runtime", Runtime)
    return trt
