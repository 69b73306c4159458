"""The public Python API (`import pointkd`): the whole pipeline from Python, the same results
as the stages, nothing printed, and a plain `import pointkd` that loads no torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import pointkd
from pointkd.errors import ConfigError

DATA = "synthetic:version=1,train_per_class=8,test_per_class=3"
TINY = [f"data.path={DATA}", "data.num_points=128", "train.epochs=1",
        "train.max_steps_per_epoch=3", "train.batch_size=16", "train.progress=false",
        "train.device=cpu", "train.threads=1"]


def test_the_pipeline_from_python(tmp_path, capsys):
    teacher = pointkd.train(pointkd.load_config(None, [*TINY, "model.name=student_s",
                                                       f"out={tmp_path / 't'}"]))
    assert teacher["mode"] == "plain" and 0 <= teacher["test_oa"] <= 1
    assert teacher.text().startswith("done: ") and str(tmp_path / "t") in teacher.text()

    rec = pointkd.record(pointkd.RecordConfig(
        teachers=[str(tmp_path / "t" / "best.pt")], data=DATA, out=str(tmp_path / "rec"),
        k=2, device="cpu", progress=False))
    assert rec.total_rows == 2 * rec.num_shapes and rec.text().startswith("recorded ")
    records = pointkd.open_records(str(rec.root))
    assert len(records.rows(np.arange(3)).sample) == 3

    # distill: no data.path, the records name their dataset
    student = pointkd.distill(pointkd.load_config(None, [
        *TINY[1:], "model.name=student_xs", f"distill.records={rec.root}",
        f"out={tmp_path / 's'}"]))
    assert student["mode"] == "offline-kd" and student["data"] == DATA

    report = pointkd.evaluate(pointkd.EvalConfig([str(tmp_path / "s" / "best.pt")], DATA,
                                                 device="cpu", latency=False, progress=False))
    assert report.report["single_view"]["oa"] == pytest.approx(student["test_oa"])

    clouds = tmp_path / "clouds"
    clouds.mkdir()
    np.save(clouds / "a.npy", np.random.default_rng(0).normal(size=(200, 3)).astype("f4"))
    (top,) = pointkd.predict(str(tmp_path / "s" / "best.pt"), [str(clouds)], topk=2,
                             device="cpu")
    assert top["file"].endswith("a.npy") and len(top["top"]) == 2
    assert pointkd.create_model("student_xs", 5)(
        __import__("torch").zeros(2, 64, 3)).shape == (2, 5)
    assert capsys.readouterr().out == ""  # stages return results; only the CLI prints


def test_distill_without_a_teacher_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="distill needs a teacher's targets"):
        pointkd.distill(pointkd.load_config(None, [*TINY, "model.name=student_xs",
                                                   f"out={tmp_path / 's'}"]))


def test_import_pointkd_loads_no_torch():
    code = "import sys, pointkd; pointkd.__version__; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


def test_an_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        pointkd.trian  # noqa: B018
