"""``fold --project --keep-dense``: chosen layers stay out of the 2:4 projection, the choice travels
in the folded checkpoint, and ``verify`` reports them as kept dense, not as failures."""

from __future__ import annotations

import pytest
import torch

from maxq_deploy.core.errors import OptionError
from maxq_deploy.core.sparsity import check_pattern
from maxq_deploy.fold import fold_checkpoint, load_folded
from maxq_deploy.verify import verify_artifact

KEEP = ["layer1.0.convbn1", "layer4.0.downsample"]


@pytest.mark.slow
def test_keep_dense_is_recorded_and_verified(store, tmp_path):
    src = store.checkpoint(arch="resnet18", nm="4:8")
    out = tmp_path / "folded.pt"
    result = fold_checkpoint(src, out, project=True, keep_dense=[",".join(KEEP)])
    by_name = {layer.name: layer for layer in result.sparse_layers}
    assert [n for n, l in by_name.items() if l.kept_dense] == KEEP
    assert all(not by_name[n].projected and not by_name[n].holds_hardware_pattern for n in KEEP)
    assert all(l.projected and l.holds_hardware_pattern for n, l in by_name.items() if n not in KEEP)
    folded = load_folded(out)
    assert folded.meta["kept_dense"] == KEEP
    assert check_pattern(folded.state_dict["layer1.0.convbn1.weight"], "4:8").holds  # its trained N:M, not 2:4
    report = verify_artifact(out)
    assert report.ok and report.verdict == f"PASS: all {len(by_name) - 2} sparse layers hold 2:4"
    kept = [l for l in report.layers if l.name in KEEP]
    assert all(not l.expected_sparse and "kept dense on purpose" in l.note for l in kept)
    assert any("kept dense on purpose" in note for note in report.notes)


def test_bad_keep_dense_is_one_line(store, tmp_path, capsys):
    from maxq_deploy.cli.app import main

    src = store.checkpoint(arch="resnet18", nm="4:8")
    cases = [
        (["--project", "--keep-dense", "layer9.0.convbn1"], "no sparse layer named 'layer9.0.convbn1'"),
        (["--keep-dense", "layer1.0.convbn1"], "add --project"),
        (["--project", "--keep-dense", "fc"], "no sparse layer named 'fc'"),
    ]
    for args, expected in cases:
        with pytest.raises(SystemExit) as info:
            main(["fold", str(src), "-o", str(tmp_path / "f.pt"), *args])
        err = capsys.readouterr().err
        assert info.value.code != 0 and len(err.strip().splitlines()) == 1 and err.startswith("error:") and expected in err, err
        assert not (tmp_path / "f.pt").exists()
    with pytest.raises(OptionError):
        fold_checkpoint(src, tmp_path / "g.pt", project=True, keep_dense=["nope"])
