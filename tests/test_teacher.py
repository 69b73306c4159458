"""Teachers from anywhere (`pointkd.teacher`): ONNX files, the user's own PyTorch factory with
weights, mixed ensembles; class mapping by name, declared input normalisation, manifest
hashes and `records verify` on each kind; one-line errors for bad teachers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _numerics import assert_close_pair, assert_close_to_reference, n_eff, student_n_eff
from conftest import tear_shard
from safetensors.torch import save_file

from pointkd import augment
from pointkd.checkpoint import save_checkpoint
from pointkd.data import load_split
from pointkd.models import create_model
from pointkd.records import open_records, read_manifest
from pointkd.stages.export import export_onnx
from pointkd.teachers.load import load_teachers, teacher_kind, unit_sphere_frames

DATA = "synthetic:version=1,train_per_class=4,test_per_class=1"  # 48 shapes, 12 classes
POINTS = 64

# A user's teacher package, written as a user would have it. Its 12 logits are exact
# functions of the input cloud (extrema + the first two points) plus a learnable offset, so
# recorded logits reveal exactly what it saw and that its weights were loaded.
USER_MODULE = '''
import torch
from torch import nn


class Probe(nn.Module):
    def __init__(self, normalization=None, names=None):
        super().__init__()
        self.num_points = 64  # optional: the points per cloud it wants (default: the data's)
        self.offset = nn.Parameter(torch.zeros(12))
        if normalization:
            self.input_normalization = normalization
        if names:
            self.class_names = names

    def forward(self, x):
        return torch.cat([x.amax(1), x.amin(1), x[:, :2].flatten(1)], dim=1) + self.offset


def build():
    return Probe()


def build_cube():
    return Probe("unit_cube")


def build_raw():
    return Probe("none")


def build_wrong_output():
    class Flat(Probe):
        def forward(self, x):
            return x.sum()
    return Flat()
'''


@pytest.fixture(scope="module")
def ds():
    return load_split(DATA, "train", num_points=POINTS)


@pytest.fixture
def user_pkg(tmp_path, monkeypatch):
    """`userpkg.nets` importable from the working directory, and its weights files."""
    (tmp_path / "userpkg").mkdir()
    (tmp_path / "userpkg" / "__init__.py").write_text("")
    (tmp_path / "userpkg" / "nets.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    state = {"offset": torch.arange(12, dtype=torch.float32) / 100}
    torch.save({"state_dict": state, "epoch": 7}, tmp_path / "w.pt")
    save_file(state, str(tmp_path / "w.safetensors"))
    return tmp_path


def probe_logits(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x.amax(1), x.amin(1), x[:, :2].flatten(1)], dim=1) + torch.arange(12) / 100


def replayed(rs, ds):
    """Every recorded row's augmented cloud, as a student replays it."""
    batch = rs.rows(np.arange(len(rs)))
    x = augment.apply(torch.from_numpy(ds.points)[batch.sample], batch.params, batch.seeds,
                      rs.spec)
    return batch, x


def record_args(out, *teachers, logits="fp32", extra=()):
    args = ["record", "--data", DATA, "--out", out, "--k", "2", "--batch-size", "16",
            "--device", "cpu", "--logits", logits, "--no-progress", *extra]
    for t in teachers:
        args += ["--teacher", t]
    return args


def test_teacher_kind_from_its_name(tmp_path):
    assert teacher_kind("a/b.onnx") == "onnx" and teacher_kind("runs/x/best.pt") == "pointkd"
    assert teacher_kind("pkg.mod:build") == "module"
    assert teacher_kind("models/net.py:make_model") == "module"
    assert teacher_kind("C:/runs/best.pt") == "pointkd"  # a drive letter is no entry point


@pytest.mark.numerics
def test_module_teacher_records_what_it_saw(cli, user_pkg, ds):
    for weights in ("w.pt", "w.safetensors"):
        out = user_pkg / f"rec-{weights}"
        code, _, err = cli(*record_args(out, "userpkg.nets:build",
                                        extra=["--weights", weights]))
        assert code == 0, err
        rs = open_records(out, data=ds)
        batch, x = replayed(rs, ds)
        assert torch.equal(batch.logits, probe_logits(x))  # weights loaded, input as replayed
        t = read_manifest(out)["teachers"][0]
        assert t["kind"] == "module" and t["entry"] == "userpkg.nets:build"
        assert t["file"] == weights and t["num_classes"] == 12
        assert t["normalization"] == "pointkd" and t["source_file"] == "nets.py"
        assert len(t["sha256"]) == 64 and len(t["source_sha256"]) == 64
    # the same factory by file path gives the same records
    code, _, err = cli(*record_args(user_pkg / "by-file", "userpkg/nets.py:build",
                                    extra=["--weights", "w.pt"]))
    assert code == 0, err
    assert (user_pkg / "by-file/shard-00000.bin").read_bytes() == (
        user_pkg / "rec-w.pt/shard-00000.bin").read_bytes()


def test_records_verify_rechecks_module_hashes(cli, user_pkg):
    out = user_pkg / "rec"
    assert cli(*record_args(out, "userpkg.nets:build", extra=["--weights", "w.pt"]))[0] == 0
    code, text, err = cli("records", "verify", out, "--teacher", "userpkg.nets:build",
                          "--weights", "w.pt")
    assert code == 0 and "made with userpkg.nets:build" in text, err
    code, text, _ = cli("records", "info", out)
    assert "userpkg.nets:build (module, weights w.pt" in text
    torch.save({"offset": torch.ones(12)}, user_pkg / "other.pt")
    code, _, err = cli("records", "verify", out, "--teacher", "userpkg.nets:build",
                       "--weights", "other.pt")
    assert code == 2 and "not made with teacher" in err and len(err.strip().splitlines()) == 1
    nets = user_pkg / "userpkg" / "nets.py"
    nets.write_text(nets.read_text() + "\n# edited\n")
    code, _, err = cli("records", "verify", out, "--teacher", "userpkg/nets.py:build",
                       "--weights", "w.pt")
    assert code == 2 and "source file" in err


def test_class_names_map_by_name(cli, user_pkg, ds):
    """A teacher whose outputs are in another class order is reordered to the data's."""
    perm = np.random.default_rng(0).permutation(12)
    names = [ds.class_names[i] for i in perm]  # teacher output j is data class perm[j]
    (user_pkg / "names.txt").write_text("\n".join(names) + "\n")
    out = user_pkg / "mapped"
    code, _, err = cli(*record_args(out, "userpkg.nets:build",
                                    extra=["--weights", "w.pt", "--class-names", "names.txt"]))
    assert code == 0, err
    batch, x = replayed(open_records(out, data=ds), ds)
    expected = torch.empty(len(x), 12)
    expected[:, torch.from_numpy(perm)] = probe_logits(x)
    assert torch.equal(batch.logits, expected)
    assert read_manifest(out)["teachers"][0]["class_names"] == names

    (user_pkg / "bad.txt").write_text("\n".join(names[:-1] + ["unicorn"]) + "\n")
    code, _, err = cli(*record_args(user_pkg / "bad", "userpkg.nets:build",
                                    extra=["--weights", "w.pt", "--class-names", "bad.txt"]))
    assert code == 2 and "unicorn" in err and len(err.strip().splitlines()) == 1
    assert not (user_pkg / "bad").exists()


@pytest.mark.numerics
@pytest.mark.parametrize("factory", ["build_cube", "build_raw"])
def test_declared_input_normalization(cli, user_pkg, ds, factory):
    out = user_pkg / factory
    code, _, err = cli(*record_args(out, f"userpkg.nets:{factory}", extra=["--weights", "w.pt"]))
    assert code == 0, err
    batch, x = replayed(open_records(out, data=ds), ds)
    t = read_manifest(out)["teachers"][0]
    if factory == "build_cube":  # bounding box centred, longest side 1
        assert t["normalization"] == "unit_cube"
        lo, hi = x.amin(1, keepdim=True), x.amax(1, keepdim=True)
        x = (x - (lo + hi) / 2) / (hi - lo).amax(2, keepdim=True)
        seen = batch.logits - torch.arange(12) / 100  # the probe's input features
        side = (seen[:, :3] - seen[:, 3:6]).amax(1)
        # 1 exactly, up to 8 roundings in sequence of values <= 1 (centre, subtract, divide;
        # the offset added and taken off; the difference)
        assert_close_to_reference(side, torch.ones(len(x), dtype=torch.float64), 8, scale=1.0)
    else:  # the dataset's own units: pointkd's unit-sphere normalisation undone
        assert t["normalization"] == "none"
        raw = load_split(DATA, "train", num_points=POINTS, normalize=False).points
        frames = torch.from_numpy(unit_sphere_frames(raw))[batch.sample]
        x = x * frames[:, None, 3:] + frames[:, None, :3]
        assert (frames[:, 3] - 1).abs().max() > 0.05  # the raw units differ from pointkd's
    # the recorded logits against the same normalisation done here, both in float32: a few
    # elementwise roundings each (normalisation <= 4, the offset 1)
    assert_close_pair(batch.logits, probe_logits(x), 5)


def test_cli_normalization_applies_to_undeclared_teachers(user_pkg):
    t = load_teachers(["userpkg.nets:build", "userpkg.nets:build_cube"], "cpu",
                      ["w.pt", "w.pt"], normalization="unit_sphere")
    assert [x.normalization for x in t] == ["unit_sphere", "unit_cube"]  # declared wins


@pytest.mark.parametrize("args, message", [
    (["--teacher", "userpkg.nets:build"], "--weights"),
    (["--teacher", "userpkg.nope:build", "--weights", "w.pt"], "cannot import userpkg.nope"),
    (["--teacher", "userpkg.nets:missing", "--weights", "w.pt"], "no callable 'missing'"),
    (["--teacher", "userpkg.nets:build_wrong_output", "--weights", "w.pt"],
     "output must be (B, C) logits"),
    (["--teacher", "userpkg.nets:build", "--weights", "bad.pt"], "do not fit the model"),
    (["--teacher", "userpkg.nets:build", "--weights", "nothing.pt"], "weights not found"),
    (["--teacher", "missing.onnx"], "teacher not found: missing.onnx"),
    (["--teacher", "junk.onnx"], "junk.onnx: not a loadable ONNX model"),
])
def test_bad_teachers_are_one_line_errors(cli, user_pkg, args, message):
    torch.save({"weight": torch.zeros(3)}, user_pkg / "bad.pt")
    (user_pkg / "junk.onnx").write_bytes(b"not onnx at all")
    code, out, err = cli("record", "--data", DATA, "--out", user_pkg / "r", "--k", "1",
                         "--device", "cpu", "--no-progress", *args)
    assert code == 2 and message in err, err
    assert err.startswith("pointkd: error:") and len(err.strip().splitlines()) == 1
    assert not (user_pkg / "r").exists()


@pytest.fixture(scope="module")
def pointkd_and_onnx(tmp_path_factory, ds):
    """A trained-looking pointkd teacher (random weights, BatchNorm statistics set) and its
    ONNX export."""
    root = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    model = create_model("student_xs", ds.num_classes).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics: a real teacher's are not 0/1
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    ckpt = root / "best.pt"
    save_checkpoint({"model": "student_xs", "model_kwargs": {}, "num_classes": ds.num_classes,
                     "class_names": ds.class_names, "num_points": POINTS,
                     "state_dict": model.state_dict()}, ckpt)
    export_onnx(str(ckpt), str(root / "teacher.onnx"))
    return ckpt, root / "teacher.onnx"


@pytest.mark.numerics
def test_onnx_teacher_matches_pytorch(cli, tmp_path, ds, pointkd_and_onnx):
    """The same teacher through PyTorch and ONNX Runtime: fp32 logits agree to float
    rounding; int8 rows (params, seed, codes, scale) are identical or within the encoding's
    error (measured as KL)."""
    ckpt, onnx_file = pointkd_and_onnx
    sets = {}
    for name, teacher in (("torch", ckpt), ("onnx", onnx_file)):
        for logits in ("fp32", "int8"):
            out = tmp_path / f"{name}-{logits}"
            code, _, err = cli(*record_args(out, teacher, logits=logits))
            assert code == 0, err
            sets[name, logits] = open_records(out, data=ds)
    a, b = (sets[n, "fp32"].rows(np.arange(96)) for n in ("torch", "onnx"))
    assert torch.equal(a.params, b.params) and torch.equal(a.seeds, b.seeds)
    # two float32 computations of one network (PyTorch, ONNX Runtime: other kernels)
    teacher = create_model("student_xs", ds.num_classes).eval()  # the fixture's, in eval
    assert_close_pair(a.logits, b.logits, student_n_eff(teacher, POINTS))
    qa, qb = (sets[n, "int8"] for n in ("torch", "onnx"))
    ra, rb = qa.raw_rows(np.arange(96)), qb.raw_rows(np.arange(96))
    assert (ra["params"] == rb["params"]).all() and (ra["seed"] == rb["seed"]).all()
    same_rows = (ra == rb).mean()
    la, lb = qa.rows(np.arange(96)).logits, qb.rows(np.arange(96)).logits
    kl = torch.nn.functional.kl_div(lb.log_softmax(1), la.log_softmax(1), log_target=True,
                                    reduction="batchmean")
    # measured here: 96 of 96 rows identical, KL 0; on ModelNet40 with the zoo PointNet,
    # 9,838 of 9,843 rows identical (a logit on an int8 rounding boundary), KL max 4e-6
    assert same_rows >= 0.9 and kl < 1e-4
    manifest = read_manifest(tmp_path / "onnx-int8")
    t = manifest["teachers"][0]
    assert t["kind"] == "onnx" and t["file"] == "teacher.onnx" and t["num_classes"] == 12
    assert t["class_names"] == ds.class_names  # from the export's metadata

    code, text, err = cli("records", "verify", tmp_path / "onnx-int8", "--teacher", onnx_file,
                          "--data", DATA)
    assert code == 0 and "made with teacher.onnx" in text, err
    code, _, err = cli("records", "verify", tmp_path / "onnx-int8", "--teacher", ckpt)
    assert code == 2 and "not made with teacher" in err


@pytest.mark.numerics
def test_mixed_ensemble_is_the_mean(cli, tmp_path, ds, pointkd_and_onnx, user_pkg):
    ckpt, onnx_file = pointkd_and_onnx
    parts = {}
    for name, extra in (("onnx", [str(onnx_file)]), ("pt", [str(ckpt)]),
                        ("both", [str(onnx_file), str(ckpt), "userpkg.nets:build"])):
        weights = ["--weights", "w.pt"] if name == "both" else []
        code, _, err = cli(*record_args(tmp_path / name, *extra, extra=weights))
        assert code == 0, err
        parts[name] = open_records(tmp_path / name, data=ds).rows(np.arange(96))
    _, x = replayed(open_records(tmp_path / "both", data=ds), ds)
    mean = (parts["onnx"].logits + parts["pt"].logits + probe_logits(x)) / 3
    # each teacher's logits as recorded alone (same batches: the same bits), then the mean of
    # 3 in float32 by both: a sum of 3 and a division
    assert_close_pair(parts["both"].logits, mean, n_eff(3, 1))
    kinds = [t.get("kind", "pointkd") for t in read_manifest(tmp_path / "both")["teachers"]]
    assert kinds == ["onnx", "pointkd", "module"]
    code, _, err = cli("records", "verify", tmp_path / "both", "--teacher", onnx_file,
                       "--teacher", ckpt, "--teacher", "userpkg.nets:build", "--weights", "w.pt")
    assert code == 0, err


def test_online_kd_takes_an_onnx_teacher(tmp_path, pointkd_and_onnx):
    from pointkd.config.run import load_config
    from pointkd.stages import train

    _, onnx_file = pointkd_and_onnx
    cfg = load_config(None, [f"data.path={DATA}", f"data.num_points={POINTS}",
                             "train.epochs=1", "train.max_steps_per_epoch=2",
                             "train.batch_size=16", "train.progress=false", "train.device=cpu",
                             f"out={tmp_path / 's'}", "model.name=student_xs",
                             "distill.online=true", f"distill.teacher={onnx_file}"])
    results = train.run(cfg)
    assert results["mode"] == "online-kd"
    history = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert history[0]["train_kd"] > 0


def test_teacher_contract_is_documented():
    """The user docs (docs/usage.md, linked from the README) give the exact commands (kept in
    step with the CLI's options)."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "docs" / "usage.md").read_text()
    for text in ("--teacher model.onnx", "--weights", "--class-names", "pointkd data convert"):
        assert text in readme, text


@pytest.mark.numerics
def test_onnx_recording_resumes_byte_identical(cli, tmp_path, pointkd_and_onnx):
    """Resume recomputes whole batches of the grid: ONNX Runtime must give the same bytes."""
    _, onnx_file = pointkd_and_onnx
    ref = tmp_path / "ref"
    assert cli(*record_args(ref, onnx_file, logits="int8"))[0] == 0
    out = tmp_path / "torn"
    data, _ = tear_shard(ref, out, rows=37)
    code, _, err = cli(*record_args(out, onnx_file, logits="int8", extra=["--resume"]))
    assert code == 0, err
    assert (out / "shard-00000.bin").read_bytes() == data
    assert read_manifest(out)["recording"]["rows"] == 96 - 32


def test_onnx_teacher_for_other_cloud_sizes_is_a_one_line_error(cli, tmp_path, ds,
                                                                pointkd_and_onnx, monkeypatch):
    from pointkd.stages import export
    ckpt, _ = pointkd_and_onnx
    small = tmp_path / "small.pt"
    save_checkpoint({"model": "student_xs", "model_kwargs": {}, "num_classes": 12,
                     "class_names": ds.class_names, "num_points": 32,
                     "state_dict": create_model("student_xs", 12).state_dict()}, small)
    monkeypatch.setattr(export, "_runs_at_other_point_counts", lambda *a: False)
    export_onnx(str(small), str(tmp_path / "small.onnx"))  # a static input of 32 points
    monkeypatch.undo()
    code, _, err = cli(*record_args(tmp_path / "r", ckpt, tmp_path / "small.onnx"))
    assert code == 2 and "small.onnx fails on a batch of shape (16, 64, 3)" in err, err
    assert len(err.strip().splitlines()) == 1
