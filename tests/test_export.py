"""export_model: the one entry of ``export onnx`` refuses unknown targets and options its target does not take."""

from __future__ import annotations

import pytest

from maxq_deploy.core.errors import OptionError
from maxq_deploy.export import EXPORT_TARGETS, export_model


def test_unknown_target_is_refused_with_the_known_ones(tmp_path) -> None:
    with pytest.raises(OptionError) as info:
        export_model(tmp_path / "missing.pt", tmp_path / "out.onnx", target="openvino")
    assert str(info.value) == "--target 'openvino' is not supported; choose one of tensorrt, onnxruntime"
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("target, option", [("tensorrt", "calib"), ("tensorrt", "cpu_isa"),
                                            ("onnxruntime", "float_regions"), ("onnxruntime", "dynamic_batch")])
def test_an_option_of_the_other_target_is_refused_by_its_flag_name(tmp_path, target: str, option: str) -> None:
    assert option not in EXPORT_TARGETS[target]
    with pytest.raises(OptionError) as info:
        export_model(tmp_path / "missing.pt", tmp_path / "out.onnx", target=target, **{option: "x"})
    assert str(info.value) == f"--{option.replace('_', '-')} does not apply to --target {target}"


def test_target_name_is_case_and_space_insensitive_and_unset_options_are_dropped(tmp_path, monkeypatch) -> None:
    seen = {}

    def fake_export_onnx(model_path, output, **options):  # the target's own function, recorded
        seen.update(options, model_path=model_path, output=output)
        return "result"

    import maxq_deploy.export.tensorrt_form as tensorrt_form

    monkeypatch.setattr(tensorrt_form, "export_onnx", fake_export_onnx)
    out = export_model("m.pt", "m.onnx", target=" TensorRT ", precision="fp16", calib=None, cpu_isa=None)
    assert out == "result"
    assert seen == {"precision": "fp16", "model_path": "m.pt", "output": "m.onnx"}
