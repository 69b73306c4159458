"""What a new user meets first (issue 16): where a run's data comes from, progress output in
a log, the lines runs end with, results.json, predict == eval, ONNX metadata, the demo table."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _numerics import assert_close_pair, assert_close_to_reference, n_eff, student_n_eff

from pointkd.checkpoint import load_model
from pointkd.data import load_split
from pointkd.metrics import predict_logits
from pointkd.progress import Progress
from pointkd.stages.demo import format_table, plot_summary, summarize, verdict

DATA = "synthetic:train_per_class=3,test_per_class=2"  # 60 / 40 shapes, 20 classes
TINY = ["--device", "cpu", "--threads", "1", "data.num_points=64", "train.epochs=2",
        "train.max_steps_per_epoch=2", "train.batch_size=16", "optim.warmup_epochs=0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A plain student run through the CLI with train.progress=false, and its records."""
    from pointkd.cli import main

    root = tmp_path_factory.mktemp("first_hour")
    assert main(["train", "--model", "student_xs", "--data", DATA, "--out", str(root / "t"),
                 "train.progress=false", *TINY]) == 0
    assert main(["record", "--teacher", str(root / "t" / "best.pt"), "--data", DATA, "--k", "2",
                 "--out", str(root / "rec"), "--device", "cpu", "--threads", "1"]) == 0
    return root


def test_a_quiet_run_still_ends_with_its_result_line(cli, tmp_path):
    code, out, err = cli("train", "--model", "student_xs", "--data", DATA, "--out",
                         tmp_path / "r", "train.progress=false", *TINY)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == f"data: {DATA} (from the command line)"
    assert lines[-1].startswith("done: best val OA") and "test OA" in lines[-1]
    assert len(lines) == 2  # progress=false: no per-epoch lines, but the result line


def test_a_logged_run_has_one_plain_line_per_epoch_and_no_bars(cli, tmp_path):
    code, out, err = cli("train", "--model", "student_xs", "--data", DATA, "--out",
                         tmp_path / "r", *TINY)  # capsys: stdout/stderr are not terminals
    assert code == 0, err
    assert "\r" not in out + err and "\x1b" not in out + err
    assert [line.split()[:2] for line in out.splitlines() if line.startswith("epoch")] == [
        ["epoch", "1/2"], ["epoch", "2/2"]]


def test_progress_helper_prints_tenths_off_a_terminal(capsys):
    with Progress(200, "record", unit="row") as bar:
        for _ in range(20):
            bar.update(10)
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert len(lines) == 10 and lines[0].startswith("record: 10% (20/200 rows")
    assert lines[-1].startswith("record: 100%") and err == "" and "\r" not in out
    with Progress(200, "quiet", enabled=False) as bar:
        bar.update(200)
    assert capsys.readouterr() == ("", "")


def test_data_is_required_and_presets_do_not_name_a_dataset(cli, tmp_path):
    code, _, err = cli("train", "--model", "student_xs", "--out", tmp_path / "r")
    assert code == 2 and "no dataset given: pass --data" in err
    code, _, err = cli("train", "--config", "configs/modelnet40_cpu.yaml", "--model",
                       "student_xs", "--out", tmp_path / "r")
    assert code == 2 and "does not set data.path" in err and "Traceback" not in err
    for preset in ("modelnet40_cpu", "modelnet40_distill_cpu", "modelnet40_gpu"):
        text = open(f"configs/{preset}.yaml").read()
        assert "path:" not in text, preset


def test_record_ends_with_a_summary_and_distill_defaults_to_the_recorded_data(
        trained, cli, capsys):
    from pointkd.cli import main

    main(["record", "--teacher", str(trained / "t" / "best.pt"), "--data", DATA, "--k", "2",
          "--out", str(trained / "rec"), "--device", "cpu", "--resume"])
    out = capsys.readouterr().out
    assert out.startswith("recorded 120 rows (K 2 x 60 shapes), 44 bytes/row") and \
        "already complete" in out
    code, out, err = cli("distill", "--records", trained / "rec", "--student", "student_xs",
                         "--out", trained / "d", "train.progress=false", *TINY)
    assert code == 0, err
    assert out.startswith(f"data: {DATA} (recorded in {trained / 'rec'}/manifest.json)")
    results = json.loads((trained / "d" / "results.json").read_text())
    assert results["mode"] == "offline-kd" and results["data"] == DATA
    assert {"alpha", "beta", "tau"} <= set(results)
    # another dataset than the records were made for is refused (fingerprint)
    code, _, err = cli("distill", "--records", trained / "rec", "--student", "student_xs",
                       "--data", "synthetic:train_per_class=4", "--out", trained / "e", *TINY)
    assert code == 2 and "pointkd: error:" in err


def test_plain_results_json_has_no_distillation_settings_and_consistent_times(trained, cli):
    results = json.loads((trained / "t" / "results.json").read_text())
    assert results["mode"] == "plain" and not {"alpha", "beta", "tau"} & set(results)
    assert results["train_seconds_this_session"] == results["train_seconds_total"]
    code, _, err = cli("train", "--model", "student_xs", "--data", DATA, "--out", trained / "t",
                       "--resume", "train.progress=false", *TINY, "train.epochs=3")
    assert code == 0, err
    resumed = json.loads((trained / "t" / "results.json").read_text())
    assert resumed["epochs"] == 3
    assert 0 < resumed["train_seconds_this_session"] < resumed["train_seconds_total"]


@pytest.mark.numerics
def test_predict_is_deterministic_and_equals_eval(trained, cli, tmp_path):
    ckpt = trained / "t" / "best.pt"
    model, meta = load_model(ckpt, "cpu")
    test = load_split(DATA, "test", num_points=meta["num_points"])
    for i in range(3):
        np.save(tmp_path / f"c{i}.npy", test.points[i])
    np.save(tmp_path / "big.npy", np.random.default_rng(0).normal(size=(500, 3)))
    code, out, err = cli("predict", ckpt, tmp_path, "--json", "--topk", "20", "--threads", "1")
    assert code == 0, err
    got = {r["file"].rsplit("/", 1)[-1]: r["top"] for r in json.loads(out)}
    logits = predict_logits(model, test.points[:3])
    expected = torch.softmax(logits, dim=1)
    # the CLI's batch (4 files, 1 thread) against this one: float rounding apart; the
    # probabilities are the float32 values, exact in JSON. A logit error d moves p by at most
    # ~d, so the scale is the logits' (or 1, the probabilities')
    n = student_n_eff(model, meta["num_points"]) + n_eff(test.num_classes)  # + softmax
    scale = max(1.0, float(logits.abs().max()))
    for i in range(3):
        probs = np.zeros(test.num_classes, np.float32)
        for t in got[f"c{i}.npy"]:
            probs[t["index"]] = t["prob"]
        assert_close_pair(probs, expected[i].numpy(), n, scale=scale, msg=f"c{i}.npy")
    _, again, _ = cli("predict", ckpt, tmp_path, "--json", "--topk", "20")
    assert json.loads(again) == json.loads(out)  # the 500-point file too: a fixed-seed draw


def test_onnx_records_its_input_and_takes_other_point_counts(trained, cli, tmp_path,
                                                            monkeypatch):
    import onnxruntime as ort

    from pointkd.checkpoint import save_checkpoint
    from pointkd.models import create_model
    from pointkd.stages import export

    # a graph that fails at other point counts is re-exported with a fixed point axis and
    # says so (forced here: the students' graphs now pass the check even at 64 points)
    ckpt, onnx_path = trained / "t" / "best.pt", tmp_path / "m.onnx"
    monkeypatch.setattr(export, "_runs_at_other_point_counts", lambda *a: False)
    code, out, err = cli("export", ckpt, "--onnx", onnx_path, "--threads", "1")
    monkeypatch.undo()
    assert code == 0 and "exactly 64 points" in out, err
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    props = session.get_modelmeta().custom_metadata_map
    assert props["num_points"] == "64" and props["normalization"].startswith("unit_sphere")
    assert json.loads(props["class_names"]) == load_split(DATA, "test", 8).class_names
    assert props["points_axis"] == "fixed: exactly 64 points"
    assert session.get_inputs()[0].shape[1] == 64
    # at 1,024 points it runs at other counts too; the README's onnxruntime example, on a raw
    # cloud in other units and of another size
    torch.manual_seed(0)
    model = create_model("student_xs", 3).eval()
    save_checkpoint({"model": "student_xs", "model_kwargs": {}, "num_classes": 3,
                     "class_names": ["a", "b", "c"], "num_points": 1024,
                     "state_dict": model.state_dict()}, tmp_path / "big.pt")
    code, _, err = cli("export", tmp_path / "big.pt", "--onnx", onnx_path)
    assert code == 2 and "exists; pass --overwrite" in err, err
    code, out, err = cli("export", tmp_path / "big.pt", "--onnx", onnx_path, "--overwrite")
    assert code == 0 and "any number of points" in out, err
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert session.get_modelmeta().custom_metadata_map["points_axis"].startswith("dynamic")
    cloud = np.random.default_rng(1).normal(size=(700, 3)) * 1e3 + 5e3
    x = cloud - cloud.mean(0)
    x /= np.linalg.norm(x, axis=1).max()
    logits = session.run(None, {"points": x[None].astype(np.float32)})[0]
    # ONNX Runtime and PyTorch: two float32 computations of one network (other kernels)
    assert_close_pair(logits, predict_logits(model, x[None].astype(np.float32)).numpy(),
                      student_n_eff(model, len(x)))


def test_models_says_what_the_counts_are_for(cli):
    code, out, _ = cli("models", "--classes", "12")
    assert code == 0 and out.splitlines()[0].startswith("parameters with a 12-class head")


def _fake_summary(kd_diffs):
    runs = []
    for seed in (0, 1):
        runs.append({"run": "no KD", "seed": seed, "model": "s", "test_oa": 0.80 + seed / 100,
                     "params": 40_000, "seconds": 10.0})
        runs.append({"run": "offline KD", "seed": seed, "model": "s", "params": 40_000,
                     "test_oa": 0.80 + seed / 100 + kd_diffs[seed] / 100, "seconds": 11.0})
    rows = summarize(runs, ["no KD", "offline KD"])
    teacher = {"run": "teacher (t)", "seeds": [0], "test_oa": [0.86], "mean": 0.86, "std": 0.0,
               "params": 500_000, "seconds": 60.0}
    summary = {"rows": [teacher, *rows], "teacher": {"model": "t"}, "test_shapes": 1200,
               "recording": {"rows": 6000, "k": 8, "bytes_per_row": 44, "bytes": 264_000,
                             "seconds": 12.5}, "config": "x.yaml"}
    summary["verdict"] = verdict(summary)
    return summary


@pytest.mark.numerics
def test_demo_table_pairs_seeds_and_says_plainly_when_a_gain_did_not_hold(tmp_path):
    held = _fake_summary([1.5, 0.5])
    # 100 × a difference of accuracies (~0.82) made of a few float64 roundings each: 6 in all
    diffs = torch.tensor(held["rows"][2]["paired_diff"], dtype=torch.float64)
    assert_close_to_reference(diffs, torch.tensor([1.5, 0.5], dtype=torch.float64), 6,
                              scale=100 * 0.82)
    table = format_table(held)
    assert "| offline KD | s | 0.040M | 0, 1 | 81.50 ± 0.00% | 81.50, 81.50 | +1.50, +0.50 |" \
        " +1.00 |" in table and "better on every seed" in table
    assert "1 point = 12 shapes" in table and "recorded once in 12.5 s" in table
    not_held = format_table(_fake_summary([1.5, -0.5]))
    assert "NOT better on every seed" in not_held and "does NOT show" in not_held
    plot_summary(held, tmp_path / "s.png")
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_demo_runs_end_to_end_on_a_tiny_budget(cli, tmp_path):
    code, out, err = cli("demo", "--quick", "--out", tmp_path / "demo", "--threads", "1",
                         "data.path=synthetic:train_per_class=2,test_per_class=1",
                         "data.num_points=64")
    assert code == 0, err
    assert "\r" not in out and "| offline KD + unlabelled pool |" in out
    assert "teacher vs no-KD" in out and "unlabelled shapes per class" in out
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert [r["run"] for r in summary["rows"]][1:] == ["no KD", "offline KD + unlabelled pool"]
    pool = json.loads((tmp_path / "demo" / "records_pool" / "manifest.json").read_text())
    assert pool["data"]["labels"] is False and summary["recording"]["pool"]["rows"] > 0
    for name in ("summary.png", "summary.md", "samples.png", "teacher.log", "no-kd-s0.log"):
        assert (tmp_path / "demo" / name).is_file(), name
    assert "epoch   1/2" in (tmp_path / "demo" / "no-kd-s0.log").read_text()


def test_demo_returns_its_result_and_prints_nothing_through_a_silent_say(capfd, tmp_path):
    """`run_demo` is a stage: the table and verdict come back in a DemoResult (`text()` is
    what `pointkd demo` ends with) and every progress line goes to `say`."""
    from pointkd.stages.demo import DemoResult, run_demo

    said: list[str] = []
    result = run_demo(tmp_path / "demo", quick=True, say=said.append,
                      overrides=["data.path=synthetic:train_per_class=2,test_per_class=1",
                                 "data.num_points=64"])
    out, _ = capfd.readouterr()
    assert out == ""  # nothing printed, by this process or its workers
    assert isinstance(result, DemoResult) and result.kind == "synthetic"
    assert set(result.paired_diff) == {"offline KD + unlabelled pool"}
    assert {"teacher", "no KD|0", "offline KD + unlabelled pool|0"} == set(result.runs)
    assert result.verdict[0].startswith("teacher vs no-KD student:")
    text = result.text()
    assert all(line in text for line in result.verdict)
    assert text.endswith(f"outputs in {tmp_path / 'demo'}/") and said[-1] == "\n" + text
    assert any(line.startswith("\n== 4/4 distilled students") for line in said)
    assert all(path.is_file() for path in result.files.values())
    assert (tmp_path / "demo" / "summary.md").read_text() == result.table + "\n"


def test_demo_reads_the_measured_protocol_from_the_committed_results(tmp_path):
    from pointkd.config.run import load_config
    from pointkd.stages._demo_report import measured_line

    preset = load_config("configs/modelnet40_distill_cpu.yaml")
    records = "zoo/records_student_l_modelnet40_k20"
    assert measured_line(preset, records, root=tmp_path) is None  # no results: no line
    for seed, (plain, kd) in enumerate([(0.90, 0.91), (0.91, 0.915)]):
        for mode, oa, extra in (("plain", plain, {}), ("nwsd-0.3", kd, {
                "beta": preset.distill.beta, "tau": preset.distill.tau,
                "records": f"/elsewhere/{records}"})):
            (tmp_path / f"{mode}-s{seed}.json").write_text(json.dumps(
                {"model": preset.model.name, "epochs": preset.train.epochs, "seed": seed,
                 "test_oa": oa, **extra}))
    line = measured_line(preset, records, root=tmp_path)
    assert f"({tmp_path}/, the table in BENCHMARKS.md)" in line
    assert "91.25 ± 0.35% (offline KD + NWSD) against 90.50 ± 0.71% (no KD) over 2 seeds" in line
    assert "paired +1.00, +0.50" in line
    preset.train.epochs += 1  # measured with another schedule: not this protocol's figures
    assert measured_line(preset, records, root=tmp_path) is None


def test_modelnet40_demo_distils_from_the_zoo_records(cli, tmp_path, modelnet_path):
    """`pointkd demo --data`: the zoo's strong-teacher records against no KD, side by side,
    on a 2-step budget that says it is not the measured protocol."""
    code, out, err = cli("demo", "--data", modelnet_path, "--out", tmp_path / "d",
                         "--epochs", "1", "train.max_steps_per_epoch=2")
    assert code == 0, err
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert summary["records"] == "zoo/records_student_l_modelnet40_k20"
    assert set(summary["runs"]) == {"no KD", "offline KD + NWSD"}
    assert "NOT the measured protocol: 1 epochs" in out
    # the measured figures are read from the committed results, which the line names
    assert "Measured with this protocol (bench/results/students_strong/" in out
    assert "% (offline KD + NWSD) against " in out and "% (no KD) over 3 seeds, paired" in out
    assert "[no KD] epoch   1/1" in out  # each run's epoch lines, as they come
