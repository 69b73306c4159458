"""`pointkd eval --split val`: the validation shapes a run carved from train, so ensemble
members and votes can be chosen on shapes none of them trained on."""

from __future__ import annotations

import json

import pytest

from pointkd.config.run import load_config
from pointkd.config.stages import EvalConfig
from pointkd.errors import ConfigError
from pointkd.stages import evaluate, train

DATA = "synthetic:version=1,train_per_class=12,test_per_class=3"


def test_eval_on_the_val_split_scores_what_training_validated(tmp_path, cli):
    results = train.run(load_config(None, [
        f"data.path={DATA}", "data.num_points=96", "data.val_fraction=0.25",
        "data.split_seed=3", "train.seed=5", "train.epochs=2", "train.max_steps_per_epoch=3",
        "train.batch_size=16", "train.progress=false", "train.device=cpu",
        "model.name=student_xs", f"out={tmp_path / 'r'}"]))
    report = evaluate.run(EvalConfig([str(tmp_path / "r" / "best.pt")], DATA, split="val",
                                     val_seed=3, val_fraction=0.25, device="cpu",
                                     latency=False, progress=False)).report
    assert report["single_view"]["oa"] == pytest.approx(results["val_oa"])
    assert report["single_view"]["count"] == 12 * 3  # 25% of 12 shapes, 12 classes
    code, out, err = cli("eval", tmp_path / "r" / "best.pt", "--data", DATA, "--split", "val",
                         "--val-seed", "3", "--val-fraction", "0.25", "--no-latency",
                         "--out", tmp_path / "e")
    assert code == 0, err
    saved = json.loads((tmp_path / "e" / "eval_val.json").read_text())
    assert saved["single_view"]["oa"] == pytest.approx(results["val_oa"])
    assert "val (seed 3)" in out


def test_a_bad_val_fraction_is_one_line(cli, capsys):
    with pytest.raises(SystemExit) as exit_:  # argparse refuses it before any work
        cli("eval", "x.pt", "--data", DATA, "--split", "val", "--val-fraction", "1")
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--val-fraction" in err
    assert len(err.strip().splitlines()) == 1
    with pytest.raises(ConfigError, match="--val-fraction"):
        EvalConfig(["x.pt"], DATA, val_fraction=0.0).check()
