"""The one training loop: plain, online KD, offline KD (+NWSD variants), resume, run-dir safety,
and the proof that offline distillation never builds or loads the teacher."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import best_checkpoint_test_oa

import pointkd.checkpoint
import pointkd.stages.train
import pointkd.training.loop
import pointkd.training.sources
from pointkd.config.run import load_config
from pointkd.config.stages import EvalConfig, RecordConfig
from pointkd.errors import ConfigError, RecordError
from pointkd.metrics import classification_metrics
from pointkd.records import open_records
from pointkd.records.reader import RecordSet
from pointkd.stages import record, train

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
    train.run(tiny_cfg(root / "teacher", f"model.name={TEACHER}"))
    rec = root / "records"
    record.run(RecordConfig(teachers=[str(root / "teacher" / "best.pt")], data=DATA, out=str(rec),
                        k=3, seed=0, batch_size=64, device="cpu", progress=False))
    return root / "teacher" / "best.pt", rec


def test_plain_training_writes_a_complete_run_dir(tmp_path):
    results = train.run(tiny_cfg(tmp_path / "run", f"model.name={STUDENT}"))
    run = tmp_path / "run"
    for name in ("config.yaml", "last.pt", "best.pt", "metrics.json", "metrics.csv",
                 "curves.png", "results.json"):
        assert (run / name).is_file(), name
    assert results["mode"] == "plain"
    assert results["test_oa"] == best_checkpoint_test_oa(run, DATA, 128)
    history = json.loads((run / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and "val_oa" in history[0]
    ckpt = torch.load(run / "best.pt", weights_only=True)
    assert ckpt["model"] == STUDENT and ckpt["num_points"] == 128


def test_run_dir_is_never_silently_overwritten_and_resume_continues(tmp_path):
    out = tmp_path / "run"
    train.run(tiny_cfg(out, f"model.name={STUDENT}"))
    with pytest.raises(ConfigError, match="not empty"):
        train.run(tiny_cfg(out, f"model.name={STUDENT}"))
    results = train.run(tiny_cfg(out, f"model.name={STUDENT}", "train.epochs=3"), resume=True)
    assert results["epochs"] == 3
    with pytest.raises(ConfigError, match="resume"):
        train.run(tiny_cfg(tmp_path / "fresh", f"model.name={STUDENT}"), resume=True)


def test_offline_kd_never_builds_or_loads_the_teacher(tmp_path, teacher_and_records,
                                                      monkeypatch):
    teacher_ckpt, rec = teacher_and_records
    built = []
    real_create = pointkd.training.loop.create_model

    def spy_create(name, *a, **kw):
        built.append(name)
        return real_create(name, *a, **kw)

    def no_teacher(path, *a, **kw):
        if str(path) == str(teacher_ckpt):
            raise AssertionError("offline KD loaded the teacher")
        return real_load(path, *a, **kw)

    real_load = pointkd.checkpoint.load_model
    monkeypatch.setattr(pointkd.training.loop, "create_model", spy_create)
    monkeypatch.setattr(pointkd.checkpoint, "load_model", no_teacher)
    results = train.run(tiny_cfg(tmp_path / "s", f"model.name={STUDENT}",
                                    f"distill.records={rec}", "distill.beta=-0.2",
                                    "distill.nwsd_warmup_epochs=1"))
    assert set(built) == {STUDENT} and results["mode"] == "offline-kd"
    history = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert all("train_kd" in h for h in history)


# Full epochs over every recorded row: after one epoch each shape and each row has a self target.
FULL_EPOCHS = ["distill.rows_per_epoch=all", "train.max_steps_per_epoch=0", "train.epochs=2",
               "train.batch_size=64", "distill.nwsd_warmup_epochs=1"]


@pytest.fixture(scope="module")
def kd_without_nwsd(tmp_path_factory, teacher_and_records):
    _, rec = teacher_and_records
    out = tmp_path_factory.mktemp("kd") / "s"
    train.run(tiny_cfg(out, f"model.name={STUDENT}", f"distill.records={rec}",
                          "distill.beta=0", *FULL_EPOCHS))
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("self_target", ["shape", "row", "ema"])
def test_nwsd_changes_training_after_its_warm_up(tmp_path, teacher_and_records,
                                                 kd_without_nwsd, self_target):
    _, rec = teacher_and_records
    train.run(tiny_cfg(tmp_path / "s", f"model.name={STUDENT}", f"distill.records={rec}",
                          "distill.beta=-0.3", f"distill.self_target={self_target}",
                          *FULL_EPOCHS))
    history = json.loads((tmp_path / "s" / "metrics.json").read_text())
    base = kd_without_nwsd
    # the warm-up epoch trains with beta = 0: bit for bit the run without NWSD
    assert history[0]["train_loss"] == base[0]["train_loss"]
    assert history[0]["train_kd"] == base[0]["train_kd"]
    # then the self target moves the distillation term (same seeds, same batches)
    assert history[1]["train_kd"] != pytest.approx(base[1]["train_kd"], rel=1e-3)
    assert history[1]["train_ce"] != pytest.approx(base[1]["train_ce"], rel=1e-6)


def _spy_on_record_reads(monkeypatch) -> list[list[int]]:
    """Per training epoch, the record rows the engine read through `RecordSet.rows`."""
    epochs: list[list[int]] = []
    real_batches, real_rows = pointkd.training.sources.RecordReplay.batches, RecordSet.rows

    def batches(self, epoch, batch_size):
        epochs.append([])
        yield from real_batches(self, epoch, batch_size)

    def rows(self, idx):
        epochs[-1].extend(int(i) for i in idx)
        return real_rows(self, idx)

    monkeypatch.setattr(pointkd.training.sources.RecordReplay, "batches", batches)
    monkeypatch.setattr(RecordSet, "rows", rows)
    return epochs


def _training_rows(records) -> dict[int, int]:
    """{row: shape} for every recorded row of a training (not validation) shape."""
    from pointkd.data import load_split, stratified_split

    data = load_split(DATA, "train", num_points=records.manifest["data"]["num_points"])
    train_idx, _ = stratified_split(data.labels, 0.1, 0)
    shapes = np.tile(train_idx, records.k)
    rows = records.row_index(shapes, np.repeat(np.arange(records.k), len(train_idx)))
    return dict(zip(rows.tolist(), shapes.tolist(), strict=True))


def test_offline_epochs_read_one_row_per_shape_and_k_epochs_every_row_once(
        tmp_path, teacher_and_records, monkeypatch):
    _, rec = teacher_and_records
    records = open_records(rec)
    training = _training_rows(records)
    epochs = _spy_on_record_reads(monkeypatch)
    train.run(tiny_cfg(tmp_path / "s", f"model.name={STUDENT}", f"distill.records={rec}",
                          "train.max_steps_per_epoch=0", f"train.epochs={records.k}",
                          "train.batch_size=64"))
    assert len(epochs) == records.k
    for rows in epochs:  # every training shape once, through one of its rows
        assert sorted(training[r] for r in rows) == sorted(set(training.values()))
    assert sorted(r for rows in epochs for r in rows) == sorted(training)


def test_rows_per_epoch_all_reads_every_row_once_per_epoch(tmp_path, teacher_and_records,
                                                           monkeypatch):
    _, rec = teacher_and_records
    training = _training_rows(open_records(rec))
    epochs = _spy_on_record_reads(monkeypatch)
    train.run(tiny_cfg(tmp_path / "s", f"model.name={STUDENT}", f"distill.records={rec}",
                          "distill.rows_per_epoch=all", "train.max_steps_per_epoch=0",
                          "train.epochs=1", "train.batch_size=64"))
    assert len(epochs) == 1 and sorted(epochs[0]) == sorted(training)


def test_one_per_shape_visits_each_row_once_in_k_epochs(teacher_and_records):
    from pointkd.data import load_split, stratified_split
    from pointkd.records import open_records

    _, rec = teacher_and_records
    records = open_records(rec)
    data = load_split(DATA, "train", num_points=records.manifest["data"]["num_points"])
    train_idx, _ = stratified_split(data.labels, 0.1, 0)
    source = pointkd.training.sources.RecordReplay(records, train_idx, 0, "one_per_shape")
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
    source = pointkd.training.sources.RecordReplay(records, train_idx, 0, "all", use_k=2)
    rows = np.concatenate([b.rows.numpy() for b in source.batches(0, 50)])
    assert sorted(rows) == sorted(records.row_index(np.tile(train_idx, 2),
                                                    np.repeat([0, 1], len(train_idx))))
    # ... and those rows are the bytes of a K = 2 recording with the same seed
    small = tmp_path / "k2"
    record.run(RecordConfig(teachers=[str(teacher_ckpt)], data=DATA, out=str(small), k=2, seed=0,
                        batch_size=64, device="cpu", progress=False))
    k2 = open_records(small)
    assert np.array_equal(k2.raw_rows(np.arange(len(k2))), records.raw_rows(np.arange(len(k2))))
    with pytest.raises(ConfigError, match="use_k"):
        pointkd.training.sources.RecordReplay(records, train_idx, 0, "all", use_k=records.k + 1)


def test_online_kd_runs_the_teacher_on_every_training_batch(tmp_path, teacher_and_records,
                                                            monkeypatch):
    import pointkd.teachers.load

    teacher_ckpt, _ = teacher_and_records
    batch_sizes = []
    real_call = pointkd.teachers.load.Teacher.__call__

    def counting_call(self, x, samples=None):
        batch_sizes.append(len(x))
        return real_call(self, x, samples)

    monkeypatch.setattr(pointkd.teachers.load.Teacher, "__call__", counting_call)
    results = train.run(tiny_cfg(tmp_path / "o", f"model.name={STUDENT}", "distill.online=true",
                                    f"distill.teacher={teacher_ckpt}"))
    assert results["mode"] == "online-kd"
    assert batch_sizes == [16] * 6  # 2 epochs x 3 steps of 16 clouds: no step without it
    # with votes the teacher also sees 2 rescaled views of every batch
    batch_sizes.clear()
    train.run(tiny_cfg(tmp_path / "v", f"model.name={STUDENT}", "distill.online=true",
                          f"distill.teacher={teacher_ckpt}", "distill.teacher_votes=2"))
    assert batch_sizes == [16] * 18
    # an ensemble (--teacher A --teacher B): every teacher on every batch
    batch_sizes.clear()
    train.run(tiny_cfg(tmp_path / "e", f"model.name={STUDENT}", "distill.online=true",
                          f"distill.teacher={teacher_ckpt}",
                          f"distill.extra_teachers=[{teacher_ckpt}]"))
    assert batch_sizes == [16] * 12
    for h in json.loads((tmp_path / "o" / "metrics.json").read_text()):
        assert h["train_kd"] > 0
        assert h["train_loss"] == pytest.approx(h["train_ce"] + h["train_kd"], rel=1e-6)


def test_classification_metrics_on_a_hand_counted_example():
    # true 0 0 1 1 2, predicted 0 1 1 1 0; class 3 absent: 3 of 5 right, per class 1/2, 1, 0
    m = classification_metrics(np.array([0, 1, 1, 1, 0]), np.array([0, 0, 1, 1, 2]), 4)
    assert m["oa"] == 0.6 and m["macc"] == 0.5
    assert m["per_class"] == [0.5, 1.0, 0.0, None]
    assert m["confusion"] == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]


def test_records_for_other_data_are_rejected(tmp_path, teacher_and_records):
    _, rec = teacher_and_records
    with pytest.raises(RecordError):
        train.run(tiny_cfg(tmp_path / "x", f"model.name={STUDENT}", f"distill.records={rec}",
                              "data.path=synthetic:version=1,seed=7,train_per_class=12"))


def test_cli_eval_of_an_ensemble(tmp_path, cli, teacher_and_records):
    teacher, _ = teacher_and_records
    train.run(tiny_cfg(tmp_path / "s", f"model.name={STUDENT}"))
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
    train.run(tiny_cfg(tmp_path / "p64", f"model.name={STUDENT}", "data.num_points=64"))
    code, _, err = cli("eval", teacher, tmp_path / "p64" / "best.pt", "--data", DATA)
    assert code == 2 and "ensemble members must agree" in err and err.count("\n") == 1


def test_cli_eval_with_votes(tmp_path, cli, teacher_and_records):
    """Multi-view voting averages the plain view with `votes` rescaled copies: the report has
    both, and each is a real accuracy of the same test set."""
    teacher, _ = teacher_and_records
    code, out, err = cli("eval", teacher, "--data", DATA, "--out", tmp_path / "v",
                         "--no-latency", "--votes", "2")
    assert code == 0, err
    report = json.loads((tmp_path / "v" / "eval_test.json").read_text())
    single, voted = report["single_view"], report["voting"]
    assert voted["votes"] == 2
    assert sum(map(sum, voted["confusion"])) == sum(map(sum, single["confusion"]))
    assert "voting x2  OA" in out


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


def test_training_and_evaluation_print_nothing_the_cli_prints(tmp_path, capsys):
    """Stage functions return results; `on_epoch` and the CLI say them."""
    from pointkd.stages import evaluate

    rows = []
    results = train.run(tiny_cfg(tmp_path / "run", f"model.name={STUDENT}",
                                    "train.progress=true"), on_epoch=rows.append)
    evaluation = evaluate.run(EvalConfig([str(tmp_path / "run" / "best.pt")], DATA,
                                                device="cpu", latency=False, progress=False))
    assert capsys.readouterr() == ("", "")
    assert [r["epoch"] for r in rows] == [1, 2]
    # finish_run's test OA is the evaluate stage's on the same checkpoint
    assert results["test_oa"] == evaluation.report["single_view"]["oa"]
    assert results["flops"] == evaluation.report["flops"]
    assert evaluation.text().startswith(f"model {STUDENT}  data ")


def test_split_seed_keeps_the_validation_shapes_across_training_seeds(tmp_path):
    """Ensemble members: other init seeds, one validation split (data.split_seed)."""
    def val(*extra):
        cfg = tiny_cfg(tmp_path / "x", f"model.name={STUDENT}", *extra)
        pointkd.stages.train.check(cfg)
        return pointkd.training.sources.training_source(cfg, pointkd.training.sources.SINGLE,
                                              torch.device("cpu"))[1]

    base = val("train.seed=0")
    assert np.array_equal(val("train.seed=5", "data.split_seed=0"), base)
    assert not np.array_equal(val("train.seed=5"), base)  # default: the split follows the seed
