"""Hostile-user audit, class A: `pointkd record` never stores silently wrong teacher logits.

Each teacher call gets its own copy of the batch (a teacher that modifies its input in place
cannot change what the next teacher sees); the teacher contract — input (B, P, 3) float32,
output (B, C) finite logits, each cloud's logits independent of the batch — is checked at
load on one cloud and on three, and a declared point count must be sane; non-finite logits
are an error naming the teacher, whatever its kind. Every refusal is one line, exit 2, and
leaves no record directory. The teachers are real files: a `file.py:factory` module, ONNX
graphs built with onnx.helper, pointkd checkpoints."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from pointkd import augment
from pointkd.checkpoint import save_checkpoint
from pointkd.data import load_split
from pointkd.models import create_model
from pointkd.records import open_records, read_manifest
from pointkd.teachers.inference import teacher_logits
from pointkd.teachers.load import load_teachers

DATA = "synthetic:version=1,train_per_class=2,test_per_class=1"  # 24 shapes, 12 classes
POINTS = 64

TEACHERS = '''
import torch
from torch import nn


class Probe(nn.Module):
    """12 logits that are exact functions of the cloud it is given (extrema, first points)."""

    def __init__(self):
        super().__init__()
        self.num_points = 64
        self.offset = nn.Parameter(torch.zeros(12))

    def forward(self, x):
        return torch.cat([x.amax(1), x.amin(1), x[:, :2].flatten(1)], dim=1) + self.offset


class InPlace(Probe):
    """Legal PyTorch: scores the cloud, then reuses its input buffer as scratch space."""

    def forward(self, x):
        z = super().forward(x)
        x.zero_()
        return z


class BatchCentred(Probe):
    """Centres every cloud at the batch's mean: its logits depend on the other clouds."""

    def forward(self, x):
        return super().forward(x - x.mean(dim=(0, 1), keepdim=True))


class NanInBigBatches(Probe):
    """Finite on small batches (the load-time check), NaN on the recording's batches."""

    def forward(self, x):
        z = super().forward(x)
        return z * float("nan") if len(x) > 3 else z


class FewerLogitsInBigBatches(Probe):
    def forward(self, x):
        z = super().forward(x)
        return z[:, :-1] if len(x) > 3 else z


def build():
    return Probe()


def in_place():
    return InPlace()


def batch_centred():
    return BatchCentred()


def nan_in_big_batches():
    return NanInBigBatches()


def fewer_logits_in_big_batches():
    return FewerLogitsInBigBatches()


def declares(value):
    def factory():
        model = Probe()
        model.num_points = value
        return model
    return factory


negative_points = declares(-5)
zero_points = declares(0)
text_points = declares("1024")
fractional_points = declares(64.5)
boolean_points = declares(True)
absurd_points = declares(10 ** 12)
'''


@pytest.fixture(scope="module")
def ds():
    return load_split(DATA, "train", num_points=POINTS)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """The user's teachers.py and weights (offsets 0.00..0.11; and all-NaN ones)."""
    (tmp_path / "teachers.py").write_text(TEACHERS)
    torch.save({"offset": torch.arange(12, dtype=torch.float32) / 100}, tmp_path / "w.pt")
    torch.save({"offset": torch.full((12,), float("nan"))}, tmp_path / "nan.pt")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def probe_logits(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x.amax(1), x.amin(1), x[:, :2].flatten(1)], dim=1) + torch.arange(12) / 100


def record_args(out, *teachers, weights=(), extra=()):
    args = ["record", "--data", DATA, "--out", out, "--k", "2", "--batch-size", "8",
            "--device", "cpu", "--logits", "fp32", "--no-progress", *extra]
    for t in teachers:
        args += ["--teacher", t]
    for w in weights:
        args += ["--weights", w]
    return args


def refused(cli, out, *teachers, weights=(), extra=(), at_load=True) -> str:
    """Run a record that must be refused: one line, exit 2; refused at load (`at_load`): no
    record directory, else (stopped while recording) a manifest that is not complete."""
    code, _, err = cli(*record_args(out, *teachers, weights=weights, extra=extra))
    assert code == 2, err
    assert err.startswith("pointkd: error:") and len(err.strip().splitlines()) == 1, err
    if at_load:
        assert not out.exists()
    else:
        assert not read_manifest(out)["complete"]
    return err


# --- ONNX graphs built by hand: exactly the layout under test, nothing else -------------------

def onnx_teacher(path, nodes, input_shape, initializers=(), metadata=None):
    """A one-input ('points', float32 `input_shape`) one-output ('logits') ONNX file."""
    graph = helper.make_graph(
        nodes, "teacher",
        [helper.make_tensor_value_info("points", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, None])],
        [numpy_helper.from_array(np.asarray(a), name) for name, a in initializers])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


WEIGHTS = ("W", np.linspace(-1, 1, 36, dtype=np.float32).reshape(3, 12))


def pooled_linear(points_axis: int) -> list:
    """max over the point axis, then a (3, 12) linear map: (B, 12) logits."""
    return [helper.make_node("ReduceMax", ["points"], ["pooled"], axes=[points_axis],
                             keepdims=0),
            helper.make_node("MatMul", ["pooled", "W"], ["logits"])]


# --- each teacher gets its own copy of the batch ----------------------------------------------

def test_a_teacher_that_modifies_its_input_cannot_change_the_next_ones(cli, home, ds):
    """`--combine each` with an in-place teacher first: the second teacher's stored logits
    used to be one constant row (it was fed the zeroed buffer)."""
    out = home / "rec"
    code, _, err = cli(*record_args(out, "teachers.py:in_place", "teachers.py:build",
                                    weights=["w.pt", "w.pt"], extra=["--combine", "each"]))
    assert code == 0, err
    rs = open_records(out, data=ds)
    batch = rs.rows(np.arange(len(rs)))
    x = augment.apply(torch.from_numpy(ds.points)[batch.sample], batch.params, batch.seeds,
                      rs.spec)
    expected = probe_logits(x)
    for k in range(2):
        assert torch.allclose(batch.per_teacher[:, k], expected, atol=1e-5), k


def test_teacher_logits_leave_the_callers_clouds_untouched(home):
    """Online KD runs the student on the very tensor the teacher was given."""
    teachers = load_teachers(["teachers.py:in_place", "teachers.py:build"], "cpu",
                             ["w.pt", "w.pt"])
    x = torch.rand(4, POINTS, 3) * 2 - 1
    before = x.clone()
    z = teacher_logits(teachers, x, torch.arange(4))
    assert torch.equal(x, before)
    assert torch.allclose(z[:, 0], probe_logits(before)) and torch.allclose(z[:, 1], z[:, 0])


# --- the input layout is checked, never inferred ----------------------------------------------

@pytest.mark.parametrize("shape", [["batch", 3, "points"], ["batch", 3, POINTS]])
def test_channels_first_onnx_teacher_is_refused(cli, tmp_path, shape):
    """A (B, 3, P) graph used to be recorded at num_points = 3 (its static axis 1)."""
    teacher = onnx_teacher(tmp_path / "cf.onnx", pooled_linear(2), shape, [WEIGHTS])
    err = refused(cli, tmp_path / "r", teacher)
    assert "cf.onnx" in err and "is not (B, P, 3)" in err and "channels-first" in err, err


def test_onnx_teacher_with_a_fixed_batch_size_is_refused(cli, tmp_path):
    teacher = onnx_teacher(tmp_path / "fixed.onnx", pooled_linear(1), [4, POINTS, 3],
                           [WEIGHTS])
    err = refused(cli, tmp_path / "r", teacher)
    assert "fixed.onnx" in err and "fixes the batch size at 4" in err, err


def test_onnx_teacher_whose_output_rows_depend_on_the_batch_is_refused(cli, tmp_path):
    """A free batch axis on the input, but a reshape to 2 clouds inside: it passed the old
    probe (a batch of 2) and then failed in a traceback on the recording's batches."""
    nodes = [helper.make_node("Reshape", ["points", "two"], ["pairs"]),
             helper.make_node("ReduceMax", ["pairs"], ["pooled"], axes=[1], keepdims=0),
             helper.make_node("MatMul", ["pooled", "W"], ["logits"])]
    two = ("two", np.array([2, -1, 3], np.int64))
    teacher = onnx_teacher(tmp_path / "pairs.onnx", nodes, ["batch", "points", 3],
                           [WEIGHTS, two], {"num_points": str(POINTS)})
    err = refused(cli, tmp_path / "r", teacher)
    assert "pairs.onnx" in err and "output must be (B, C) logits" in err, err


def test_onnx_teacher_that_normalises_over_the_batch_is_refused(cli, tmp_path):
    """Centring at the batch mean (BatchNorm left in training mode does the same): every
    stored row would depend on --batch-size and on which clouds share its batch."""
    nodes = [helper.make_node("ReduceMean", ["points"], ["centre"], axes=[0, 1], keepdims=1),
             helper.make_node("Sub", ["points", "centre"], ["centred"]),
             helper.make_node("ReduceMax", ["centred"], ["pooled"], axes=[1], keepdims=0),
             helper.make_node("MatMul", ["pooled", "W"], ["logits"])]
    teacher = onnx_teacher(tmp_path / "bn.onnx", nodes, ["batch", "points", 3], [WEIGHTS],
                           {"num_points": str(POINTS)})
    err = refused(cli, tmp_path / "r", teacher)
    assert "bn.onnx" in err and "change with the other clouds in its batch" in err, err


def test_module_teacher_that_normalises_over_the_batch_is_refused(cli, home):
    err = refused(cli, home / "r", "teachers.py:batch_centred", weights=["w.pt"])
    assert "teachers.py:batch_centred" in err and "other clouds in its batch" in err, err


def test_output_shape_that_changes_with_the_batch_is_one_line(cli, home):
    err = refused(cli, home / "r", "teachers.py:fewer_logits_in_big_batches",
                  weights=["w.pt"], at_load=False)
    assert "teachers.py:fewer_logits_in_big_batches" in err, err
    assert "output (8, 11) for a batch of 8, expected (8, 12)" in err, err


# --- a declared point count must be sane ------------------------------------------------------

@pytest.mark.parametrize("factory, shown", [
    ("negative_points", "-5"), ("zero_points", "0"), ("text_points", "'1024'"),
    ("fractional_points", "64.5"), ("boolean_points", "True"),
    ("absurd_points", "1000000000000")])
def test_module_teacher_declaring_a_bad_point_count_is_one_line(cli, home, factory, shown):
    err = refused(cli, home / "r", f"teachers.py:{factory}", weights=["w.pt"])
    assert f"teachers.py:{factory}" in err and "num_points must be an integer" in err, err
    assert err.rstrip().endswith(f"got {shown}"), err


@pytest.mark.parametrize("value", ["-3", "0", "64.0", "many", "99999999999"])
def test_onnx_metadata_with_a_bad_point_count_is_one_line(cli, tmp_path, value):
    teacher = onnx_teacher(tmp_path / "meta.onnx", pooled_linear(1), ["batch", "points", 3],
                           [WEIGHTS], {"num_points": value})
    err = refused(cli, tmp_path / "r", teacher)
    assert "meta.onnx" in err and "num_points must be an integer in 1.." in err, err


# --- non-finite logits name the teacher, for every kind ---------------------------------------

def test_nan_weights_of_a_module_teacher_are_named_at_load(cli, home):
    err = refused(cli, home / "r", "teachers.py:build", weights=["nan.pt"])
    assert "teachers.py:build" in err and "nan.pt" in err and "not finite" in err, err


def test_nan_weights_of_an_onnx_teacher_are_named_at_load(cli, tmp_path):
    weights = ("W", np.full((3, 12), np.nan, np.float32))
    teacher = onnx_teacher(tmp_path / "nan.onnx", pooled_linear(1), ["batch", "points", 3],
                           [weights], {"num_points": str(POINTS)})
    err = refused(cli, tmp_path / "r", teacher)
    assert "nan.onnx" in err and "not finite" in err, err


def test_checkpoint_teacher_that_overflows_is_named(cli, tmp_path, ds):
    """Finite weights (the checkpoint schema accepts them) whose activations overflow."""
    torch.manual_seed(0)
    model = create_model("student_xs", ds.num_classes)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e12)
    ckpt = tmp_path / "overflow.pt"
    save_checkpoint({"model": "student_xs", "model_kwargs": {}, "num_classes": ds.num_classes,
                     "class_names": ds.class_names, "num_points": POINTS,
                     "state_dict": model.state_dict()}, ckpt)
    err = refused(cli, tmp_path / "r", ckpt, at_load=False)
    assert "overflow.pt produced non-finite logits" in err, err


@pytest.mark.parametrize("combine", ["mean", "each"])
def test_the_teacher_whose_logits_turn_nan_is_named_among_several(cli, home, combine):
    """The second of two teachers goes NaN on the recording's batches (after passing the
    load-time check): the error used to say only 'teacher produced non-finite logits'."""
    err = refused(cli, home / "r", "teachers.py:build", "teachers.py:nan_in_big_batches",
                  weights=["w.pt", "w.pt"], extra=["--combine", combine], at_load=False)
    assert "teacher teachers.py:nan_in_big_batches produced non-finite logits" in err, err
