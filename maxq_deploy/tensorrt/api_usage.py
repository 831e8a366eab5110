"""Every TensorRT Python name this package uses, per code path (checked against real releases).

``tests/test_tensorrt_api_usage.py`` checks each name against the API surface recorded from the
real bindings of every supported release (``tests/data/trt_api/<version>.json``, written by
``tools/trt_api_surface.py``), checks that the code reads no ``trt.X`` and no method of a fake
object that is not listed here, and checks the version-dependent paths (precision flags, strong
typing) only where :func:`maxq_deploy.tensorrt.flags.choose_builder_flags` takes them. Names are
``Class.member`` for methods/properties, ``Enum.MEMBER`` for enum members, ``Name`` for module
attributes. Pure data: importing this never imports TensorRT.
"""

from __future__ import annotations

#: Used on every supported version: build, inspect, run.
COMMON: tuple[str, ...] = (
    "__version__",
    # logging (_trt.py): the code subclasses ILogger; TensorRT calls log(severity, msg)
    "ILogger", "ILogger.__init__", "ILogger.log", "ILogger.Severity",
    # build (build.py)
    "Builder", "Builder.__init__", "Builder.create_network", "Builder.create_builder_config",
    "Builder.create_optimization_profile", "Builder.build_serialized_network",
    "NetworkDefinitionCreationFlag", "BuilderFlag",
    "INetworkDefinition.num_inputs", "INetworkDefinition.get_input", "ITensor.name",
    "OnnxParser", "OnnxParser.__init__", "OnnxParser.parse_from_file", "OnnxParser.num_errors", "OnnxParser.get_error",
    "ParserError.node_name", "ParserError.desc",
    "IBuilderConfig.set_memory_pool_limit", "MemoryPoolType.WORKSPACE",
    "IBuilderConfig.profiling_verbosity", "ProfilingVerbosity.DETAILED", "IBuilderConfig.set_flag",
    "IBuilderConfig.add_optimization_profile", "IOptimizationProfile.set_shape",
    "IBuilderConfig.create_timing_cache", "IBuilderConfig.set_timing_cache", "IBuilderConfig.get_timing_cache",
    "ITimingCache.serialize", "IHostMemory",
    "BuilderFlag.ERROR_ON_TIMING_CACHE_MISS",  # --pin-timing-cache (set only where the release has it; all recorded do)
    "BuilderFlag.SPARSE_WEIGHTS",
    # inspect (build.py): a context with input shapes set, so formats are real
    "Runtime", "Runtime.__init__", "Runtime.deserialize_cuda_engine",
    "ICudaEngine.create_engine_inspector", "ICudaEngine.create_execution_context", "ICudaEngine.num_io_tensors",
    "ICudaEngine.get_tensor_name", "ICudaEngine.get_tensor_mode", "ICudaEngine.get_tensor_profile_shape",
    "TensorIOMode.INPUT", "TensorIOMode.OUTPUT",
    "IExecutionContext.set_input_shape", "EngineInspector.execution_context", "EngineInspector.get_engine_information",
    "LayerInformationFormat.JSON",
    # run (runtimes/tensorrt_runner.py: engine_from_file -> I/O names, profile and output shapes -> run)
    "ICudaEngine.get_tensor_dtype", "ICudaEngine.get_tensor_shape", "IExecutionContext.set_tensor_address",
    "IExecutionContext.get_tensor_shape", "IExecutionContext.execute_async_v3", "DataType",
)

#: Weak typing + precision flags: taken only where the version has them and has not deprecated them (< 10.12).
WEAK_TYPING: tuple[str, ...] = ("BuilderFlag.FP16", "BuilderFlag.INT8")
#: Strong typing by creation flag: 10.x from 10.12 (11.x is always strongly typed and gets no flag).
STRONG_TYPING_10: tuple[str, ...] = ("NetworkDefinitionCreationFlag.STRONGLY_TYPED",)
#: DataType names the runner maps to torch dtypes; a version may lack some (then it cannot produce them).
RUNNER_DTYPES: tuple[str, ...] = ("FLOAT", "HALF", "BF16", "INT8", "INT32", "INT64", "BOOL", "UINT8")
