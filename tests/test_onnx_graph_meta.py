"""maxq_deploy.onnx_graph.meta: the metadata_props keys an exported graph carries, written and read back."""

from __future__ import annotations

import onnx

from maxq_deploy.onnx_graph import meta


def test_keys_carry_the_prefix():
    assert meta.key("nm") == meta.NM == "maxq_deploy.nm"
    assert meta.SPARSE_LAYERS == "maxq_deploy.sparse_layers"


def test_write_replaces_keeps_foreign_keys_and_skips_none():
    model = onnx.ModelProto()
    onnx.helper.set_model_props(model, {"author": "someone", meta.NM: "4:8"})
    meta.write_metadata(model, {"nm": "2:4", "input_size": 32, "arch": None, meta.PRECISION: "int8"})
    assert meta.read_metadata(model) == {"author": "someone", meta.NM: "2:4", meta.INPUT_SIZE: "32", meta.PRECISION: "int8"}
    assert [p.key for p in model.metadata_props].count(meta.NM) == 1


def test_read_of_an_object_without_metadata_is_empty():
    assert meta.read_metadata(object()) == {}
