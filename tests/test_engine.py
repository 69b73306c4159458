"""The one training loop: plain, online KD, offline KD (+NWSD variants), resume, run-dir safety,
and the proof that offline distillation never builds or loads the teacher."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import pointkd.checkpoint
import pointkd.engine
from pointkd.config import load_config
from pointkd.engine import run_training
from pointkd.errors import ConfigError, RecordError
from pointkd.records import record

STUDENT = "student_xs"
TEACHER = "student_s"
DATA = "synthetic:version=1,train_per_class=12,test_per_class=4"
TINY = [f"data.path={DATA}", "data.num_points=128", "train.epochs=2",
        "train.max_steps_per_epoch=3", "train.batch_size=16", "train.progress=false",
        "train.device=cpu", "train.eval_batch_size=128"]


def tiny_cfg(out, *extra):
    return load_config(None, TINY + [f"out={out}", *extra])


@pytest.fixture(scope="module")
def teacher_and_records(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    run_training(tiny_cfg(root / "teacher", f"model.name={TEACHER}"))
    rec = root / "records"
    record(teachers=[str(root / "teacher" / "best.pt")], data=DATA, out=str(rec), k=3,
           seed=0, logits="int8", topk=0, combine="mean", batch_size=64, device="cpu",
           resume=False, overwrite=False, augment_config=None, progress=False)
    return root / "teacher" / "best.pt", rec


def test_plain_training_writes_a_complete_run_dir(tmp_path):
    results = run_training(tiny_cfg(tmp_path / "run", f"model.name={STUDENT}"))
    run = tmp_path / "run"
    for name in ("config.yaml", "last.pt", "best.pt", "metrics.json", "metrics.csv",
                 "curves.png", "results.json"):
        assert (run / name).is_file(), name
    assert 0.0 <= results["test_oa"] <= 1.0 and results["mode"] == "plain"
    history = json.loads((run / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and "val_oa" in history[0]
    ckpt = torch.load(run / "best.pt", weights_only=True)
    assert ckpt["model"] == STUDENT and ckpt["num_points"] == 128


def test_run_dir_is_never_silently_overwritten_and_resume_continues(tmp_path):
    out = tmp_path / "run"
    run_training(tiny_cfg(out, f"model.name={STUDENT}"))
    with pytest.raises(ConfigError, match="not empty"):
        run_training(tiny_cfg(out, f"model.name={STUDENT}"))
    results = run_training(tiny_cfg(out, f"model.name={STUDENT}", "train.epochs=3"), resume=True)
    assert results["epochs"] == 3
    with pytest.raises(ConfigError, match="resume"):
        run_training(tiny_cfg(tmp_path / "fresh", f"model.name={STUDENT}"), resume=True)


def test_offline_kd_never_builds_or_loads_the_teacher(tmp_path, teacher_and_records,
                                                      monkeypatch):
    teacher_ckpt, rec = teacher_and_records
    built = []
    real_create = pointkd.engine.create_model

    def spy_create(name, *a, **kw):
        built.append(name)
        return real_create(name, *a, **kw)

    def no_teacher(path, *a, **kw):
        if str(path) == str(teacher_ckpt):
            raise AssertionError("offline KD loaded the teacher")
        return real_load(path, *a, **kw)

    real_load = pointkd.engine.load_model
    monkeypatch.setattr(pointkd.engine, "create_model", spy_create)
    monkeypatch.setattr(pointkd.engine, "load_model", no_teacher)
    monkeypatch.setattr(pointkd.checkpoint, "load_model", no_teacher)
    results = run_training(tiny_cfg(tmp_path / "s", f"model.name={STUDENT}",
                                    f"distill.records={rec}", "distill.beta=-0.2",
                                    "distill.nwsd_warmup_epochs=1"))
    assert set(built) == {STUDENT} and results["mode"] == "offline-kd"
    history = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert history[0]["beta"] == 0.0 and history[1]["beta"] == -0.2
    assert all("train_kd" in h for h in history)


@pytest.mark.parametrize("self_target", ["shape", "row", "ema"])
def test_nwsd_self_targets_train(tmp_path, teacher_and_records, self_target):
    _, rec = teacher_and_records
    results = run_training(tiny_cfg(tmp_path / "s", f"model.name={STUDENT}",
                                    f"distill.records={rec}", "distill.beta=-0.3",
                                    "distill.nwsd_warmup_epochs=0",
                                    f"distill.self_target={self_target}"))
    assert results["beta"] == -0.3


def test_rows_per_epoch_all_visits_every_row(tmp_path, teacher_and_records):
    _, rec = teacher_and_records
    cfg = tiny_cfg(tmp_path / "s", f"model.name={STUDENT}", f"distill.records={rec}",
                   "distill.rows_per_epoch=all", "train.max_steps_per_epoch=0",
                   "train.epochs=1", "train.batch_size=64")
    run_training(cfg)
    history = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert history[0]["epoch"] == 1


def test_one_per_shape_visits_each_row_once_in_k_epochs(teacher_and_records):
    from pointkd.data import load_split, stratified_split
    from pointkd.records import open_records

    _, rec = teacher_and_records
    records = open_records(rec)
    data = load_split(DATA, "train", num_points=records.manifest["data"]["num_points"])
    train_idx, _ = stratified_split(data.labels, 0.1, 0)
    source = pointkd.engine.RecordedShapes(records, train_idx, 0, "one_per_shape")
    rows = [int(r) for e in range(records.k) for b in source.batches(e, 50) for r in b.rows]
    expected = sorted(int(r) for k in range(records.k)
                      for r in records.row_index(train_idx, [k] * len(train_idx)))
    assert sorted(rows) == expected


def test_use_k_restricts_to_the_rows_of_a_smaller_recording(tmp_path, teacher_and_records):
    from pointkd.data import load_split, stratified_split
    from pointkd.records import open_records

    teacher_ckpt, rec = teacher_and_records
    records = open_records(rec)
    data = load_split(DATA, "train", num_points=records.manifest["data"]["num_points"])
    train_idx, _ = stratified_split(data.labels, 0.1, 0)
    source = pointkd.engine.RecordedShapes(records, train_idx, 0, "all", use_k=2)
    rows = np.concatenate([b.rows.numpy() for b in source.batches(0, 50)])
    assert sorted(rows) == sorted(records.row_index(np.tile(train_idx, 2),
                                                    np.repeat([0, 1], len(train_idx))))
    # ... and those rows are the bytes of a K = 2 recording with the same seed
    small = tmp_path / "k2"
    record(teachers=[str(teacher_ckpt)], data=DATA, out=str(small), k=2, seed=0,
           logits="int8", topk=0, combine="mean", batch_size=64, device="cpu", resume=False,
           overwrite=False, augment_config=None, progress=False)
    k2 = open_records(small)
    assert np.array_equal(k2.raw_rows(np.arange(len(k2))), records.raw_rows(np.arange(len(k2))))
    with pytest.raises(ConfigError, match="use_k"):
        pointkd.engine.RecordedShapes(records, train_idx, 0, "all", use_k=records.k + 1)


def test_online_kd_runs_in_the_same_loop(tmp_path, teacher_and_records):
    teacher_ckpt, _ = teacher_and_records
    results = run_training(tiny_cfg(tmp_path / "o", f"model.name={STUDENT}", "distill.online=true",
                                    f"distill.teacher={teacher_ckpt}"))
    assert results["mode"] == "online-kd"


def test_records_for_other_data_are_rejected(tmp_path, teacher_and_records):
    _, rec = teacher_and_records
    with pytest.raises(RecordError):
        run_training(tiny_cfg(tmp_path / "x", f"model.name={STUDENT}", f"distill.records={rec}",
                              "data.path=synthetic:version=1,seed=7,train_per_class=12"))


def test_cli_eval_of_an_ensemble(tmp_path, cli, teacher_and_records):
    teacher, _ = teacher_and_records
    run_training(tiny_cfg(tmp_path / "s", f"model.name={STUDENT}"))
    student = tmp_path / "s" / "best.pt"
    single = tmp_path / "single"
    assert cli("eval", teacher, "--data", DATA, "--out", single, "--no-latency")[0] == 0
    code, out, err = cli("eval", teacher, student, "--data", DATA, "--out", tmp_path / "ens")
    assert code == 0, err
    report = json.loads((tmp_path / "ens" / "eval_test.json").read_text())
    assert [m["model"] for m in report["members"]] == [TEACHER, STUDENT]
    assert report["params"] == sum(
        sum(p.numel() for p in pointkd.checkpoint.load_model(c)[0].parameters())
        for c in (teacher, student))
    assert out.count("member ") == 2 and len(report["latency"]) == 2
    # the mean of identical logits is those logits: a 2x ensemble scores as the model alone
    code, _, err = cli("eval", teacher, teacher, "--data", DATA, "--out", tmp_path / "twice",
                       "--no-latency")
    assert code == 0, err
    twice = json.loads((tmp_path / "twice" / "eval_test.json").read_text())
    alone = json.loads((single / "eval_test.json").read_text())
    assert twice["single_view"]["confusion"] == alone["single_view"]["confusion"]
    # members must see the same clouds and predict the same classes
    run_training(tiny_cfg(tmp_path / "p64", f"model.name={STUDENT}", "data.num_points=64"))
    code, _, err = cli("eval", teacher, tmp_path / "p64" / "best.pt", "--data", DATA)
    assert code == 2 and "ensemble members must agree" in err and err.count("\n") == 1


def test_cli_train_eval_distill(tmp_path, cli, teacher_and_records):
    _, rec = teacher_and_records
    code, out, err = cli("train", "--model", STUDENT, "--data", DATA, "--out",
                         tmp_path / "t", *TINY[1:])
    assert code == 0, err
    code, out, err = cli("eval", tmp_path / "t" / "best.pt", "--data", DATA, "--out",
                         tmp_path / "t", "--no-latency")
    assert code == 0, err
    assert "OA" in out and (tmp_path / "t" / "confusion_test.png").is_file()
    code, out, err = cli("distill", "--records", rec, "--student", STUDENT, "--data",
                         DATA, "--out", tmp_path / "d", "--beta", "-0.1", *TINY[1:])
    assert code == 0, err
    code, _, err = cli("distill", "--student", STUDENT, "--data", "synthetic", "--teacher",
                       "x.pt", "--out", tmp_path / "e")
    assert code == 2 and "--online" in err
