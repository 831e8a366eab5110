"""maxq-deploy: from MaxQ N:M-sparse checkpoints to verified sparse INT8 inference.

The package mirrors the pipeline, one module per stage:
``checkpoint`` (load) -> ``fold`` -> ``verify`` -> ``quantize`` -> ``export_onnx`` ->
``tensorrt`` -> ``bench`` / ``evaluate``. Heavy optional backends (TensorRT, CUDA) are imported
only where used.
"""

__version__ = "0.1.0"
