"""``fold --project --auto --max-drop X``: layers kept dense chosen greedily from the sensitivity report
under a measured accuracy budget; the choice is written like ``--keep-dense``; bad budgets are one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from maxq_deploy.core.errors import OptionError
from maxq_deploy.sensitivity.auto import auto_keep_dense, check_budget

SIZE = 32


@pytest.fixture(scope="module")
def labelled(store, tmp_path_factory):
    """32 random images labelled by the MaxQ 4:8 network itself: its top-1 is 100 %, any change is a drop."""
    from maxq_deploy.load.maxq_checkpoint import load_checkpoint

    src = store.checkpoint(arch="resnet18", nm="4:8")
    x = torch.randn(32, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = load_checkpoint(src).build_model().eval()(x).argmax(1)
    path = tmp_path_factory.mktemp("auto") / "self.npz"
    np.savez(path, images=x.numpy(), labels=y.numpy())
    return src, path


@pytest.mark.slow
def test_auto_keeps_the_costly_layers_within_the_budget(labelled, tmp_path, cli) -> None:
    from maxq_deploy.fold import load_folded
    from maxq_deploy.verify import verify_artifact

    src, data = labelled
    none = auto_keep_dense(src, tmp_path / "all.pt", data, max_drop=100.0, batch_size=32)
    assert none.kept_dense == [] and len(none.steps) == 1 and none.baseline_top1 == 100.0
    full_drop = none.drop
    assert full_drop > 0  # projecting 19 random 4:8 layers changes predictions
    budget = full_drop / 2
    out = tmp_path / "auto.pt"
    result = cli("fold", src, "-o", out, "--project", "--auto", "--max-drop", budget, "--data", data, "--limit", 32, "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    auto = summary["auto"]
    assert auto["within_budget"] and auto["drop"] <= budget and auto["kept_dense"] == summary["kept_dense"]
    assert [len(s["kept_dense"]) for s in auto["steps"]] == list(range(len(auto["steps"])))  # one more layer a step
    assert auto["steps"][0]["drop"] == pytest.approx(full_drop) and len(auto["kept_dense"]) >= 1
    ranked = [r["name"] for r in auto["ranking"]]
    assert auto["kept_dense"] == ranked[: len(auto["kept_dense"])]  # the most costly first
    assert load_folded(out).meta["kept_dense"] == auto["kept_dense"]
    report = verify_artifact(out)
    assert report.ok and len(report.expected) == 19 - len(auto["kept_dense"])


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_bad_budget_is_one_line(labelled, tmp_path, capsys, value) -> None:
    from maxq_deploy.cli.app import main

    src, data = labelled
    with pytest.raises(SystemExit) as info:
        main(["fold", str(src), "-o", str(tmp_path / "f.pt"), "--project", "--auto", "--max-drop", value, "--data", str(data)])
    err = capsys.readouterr().err
    assert info.value.code != 0 and len(err.strip().splitlines()) == 1 and err.startswith("error:") and "--max-drop" in err, err
    assert not (tmp_path / "f.pt").exists()
    with pytest.raises(OptionError):
        check_budget(float(value))


def test_auto_needs_project_and_a_budget(labelled, tmp_path, capsys) -> None:
    from maxq_deploy.cli.app import main

    src, data = labelled
    for args in (["--auto", "--max-drop", "1"], ["--project", "--auto"], ["--project", "--max-drop", "1"],
                 ["--project", "--auto", "--max-drop", "1", "--keep-dense", "conv1"]):
        with pytest.raises(SystemExit):
            main(["fold", str(src), "-o", str(tmp_path / "f.pt"), "--data", str(data), *args])
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and err.startswith("error:") and "--auto" in err, (args, err)


def test_pareto_front_keeps_the_costliest_first() -> None:
    from maxq_deploy.sensitivity import LayerSensitivity, SensitivityResult

    def layer(name, delta, flops, params):
        return LayerSensitivity(name, [8, 8, 3, 3], 1, delta is None, 0, flops, params, delta_2_4=delta, trt_sparse=True)

    result = SensitivityResult("m", "resnet18", "4:8", "d", 100, 90.0, layers=[
        layer("a", -1.0, 40.0, 20.0), layer("b", -5.0, 20.0, 30.0), layer("c", None, 10.0, 10.0), layer("d", -0.5, 30.0, 40.0)])
    front = result.to_dict()["pareto"]
    assert [p["kept_dense"] for p in front] == [[], ["b"], ["b", "a"], ["b", "a", "d"]]
    assert [p["estimated_drop"] for p in front] == [6.5, 1.5, 0.5, 0.0]
    assert [p["flops_saved_share"] for p in front] == [50.0, 40.0, 20.0, 5.0]
    assert [p["params_saved_share"] for p in front] == [50.0, 35.0, 25.0, 5.0]
