"""Record store: row layouts, logits encodings, exact replay, several teachers, reader,
verify (one case each, through the CLI), no silent overwrite, resume safety."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tear_shard
from torch import nn

from pointkd import augment
from pointkd.checkpoint import save_checkpoint
from pointkd.config.run import augment_spec
from pointkd.config.stages import RecordConfig
from pointkd.data import load_split
from pointkd.errors import OutputError, RecordError
from pointkd.models import register_model
from pointkd.records import (
    decode_logits,
    encode_logits,
    info,
    open_records,
    read_manifest,
    row_dtype,
)
from pointkd.stages import record

DATA = "synthetic:version=1,train_per_class=4,test_per_class=1"  # 48 shapes, 12 classes
POINTS = 64


class Probe(nn.Module):
    """A test teacher whose 12 logits are exact, batch-independent functions of its input
    cloud (extrema + the first two points), so recorded logits reveal what it saw."""

    def __init__(self, num_classes: int, scale: float = 1.0):
        super().__init__()
        self.scale = scale
        self.register_buffer("unused", torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.cat([x.amax(1), x.amin(1), x[:, :2].flatten(1)], dim=1)
        return z * self.scale


def pointkd_test_probe(num_classes: int, scale: float = 1.0) -> nn.Module:
    return Probe(num_classes, scale)


try:
    register_model(pointkd_test_probe)
except ValueError:  # already registered by an earlier import of this module
    pass


@pytest.fixture(scope="module")
def ds():
    return load_split(DATA, "train", num_points=POINTS)


def make_teacher(path: Path, ds, scale: float = 1.0) -> Path:
    save_checkpoint({"model": "pointkd_test_probe", "model_kwargs": {"scale": scale},
                     "num_classes": ds.num_classes, "class_names": ds.class_names,
                     "num_points": POINTS, "state_dict": Probe(ds.num_classes).state_dict()},
                    path)
    return path


def rec(out, teachers, **kw) -> Path:
    args = dict(data=DATA, k=3, seed=0, logits="int8", topk=0, combine="mean", batch_size=16,
                device="cpu", resume=False, overwrite=False, progress=False)
    return record.run(RecordConfig(teachers=[str(t) for t in teachers], out=str(out),
                               **{**args, **kw})).root


@pytest.fixture(scope="module")
def setup(tmp_path_factory, ds):
    root = tmp_path_factory.mktemp("rec")
    teacher = make_teacher(root / "teacher.pt", ds)
    rec(root / "records", [teacher])
    return root, teacher, root / "records"


def expected_logits(ds, batch, spec, scale: float = 1.0) -> torch.Tensor:
    x = augment.apply(torch.from_numpy(ds.points)[batch.sample], batch.params, batch.seeds, spec)
    return Probe(ds.num_classes, scale)(x)


# sha256 of the one shard each recording below writes. The probe teacher's logits are exact
# functions of its input and `augment.apply` is device-exact, so these bytes are the format:
# a change here breaks every record set already written (docs/records.md).
GOLDEN_SHARDS = {
    "int8": ([1.0], {}, "3f4abc353d7998fa100f0797c52eb8348387dad038e6aac2fa56704ec1796314"),
    "fp16": ([1.0], {"logits": "fp16"},
             "f7af999b94e99a8ebabe828130a0fa4b54833d5c4293787bb87c7ac116130bbe"),
    "fp32": ([1.0], {"logits": "fp32"},
             "51a0146746a1e3cb89d40c1b847fd10d291db9715177774442574a6e0cdb5e0c"),
    "top4": ([1.0], {"topk": 4},
             "60b9b372a69b85671205db5233d83b2b9f286707372746dc9b73696ab5a81d85"),
    "each": ([1.0, 0.5], {"combine": "each", "logits": "fp16"},
             "d463a21b822d269f2e4d336fd5fd285193d14a2ecde5a62d8f724ae46a1465a0"),
    "mean": ([1.0, 0.5], {"seed": 7, "k": 2, "batch_size": 5},
             "5aa7d79abf2f1b828472bc153b5264b7a9c66dd0557902273040d078f7bcde17"),
}


@pytest.mark.parametrize("name", sorted(GOLDEN_SHARDS))
def test_recorded_shards_are_byte_identical_to_the_golden_hashes(tmp_path, ds, name):
    scales, kw, digest = GOLDEN_SHARDS[name]
    teachers = [make_teacher(tmp_path / f"t{i}.pt", ds, s) for i, s in enumerate(scales)]
    out = rec(tmp_path / "rec", teachers, **kw)
    assert sorted(p.name for p in out.glob("shard-*")) == ["shard-00000.bin"]
    assert hashlib.sha256((out / "shard-00000.bin").read_bytes()).hexdigest() == digest
    m = read_manifest(out)
    assert m["complete"] and m["shards"][0]["sha256"] == digest


def test_row_layout_and_bytes_per_row_at_40_classes():
    assert row_dtype(40, "int8").itemsize == 64  # 14 params + 8 seed + 40 + 2 scale
    assert row_dtype(40, "fp16").itemsize == 102
    assert row_dtype(40, "fp32").itemsize == 182
    assert row_dtype(40, "topk", topk=5).itemsize == 22 + 5 * 3 + 2
    assert row_dtype(40, "topk", topk=10).itemsize == 22 + 10 * 3 + 2
    assert row_dtype(300, "topk", topk=5)["top_idx"].base == np.dtype("<u2")
    assert row_dtype(40, "int8", teachers=3)["logits"].shape == (3, 40)
    with pytest.raises(RecordError, match="top-k"):
        row_dtype(40, "topk", topk=40)


@pytest.mark.parametrize("encoding, tol", [("fp32", 0.0), ("fp16", 1e-2), ("int8", None)])
def test_logit_encodings_roundtrip(encoding, tol):
    z = (np.random.default_rng(0).normal(size=(50, 2, 40)) * 8).astype(np.float32)
    rows = np.zeros(50, row_dtype(40, encoding, teachers=2))
    encode_logits(rows, z, encoding)
    back = decode_logits(rows, encoding, 0, 40)
    assert back.shape == z.shape and back.dtype == np.float32
    if tol is None:  # int8: half a quantisation step (plus fp16 rounding of the scale)
        tol = np.abs(z).max(-1, keepdims=True) / 127 * 0.51
    assert (np.abs(back - z) <= tol).all()


def test_topk_keeps_top_probabilities_and_tail_mass():
    z = (np.random.default_rng(1).normal(size=(30, 1, 40)) * 4).astype(np.float32)
    rows = np.zeros(30, row_dtype(40, "topk", topk=5))
    encode_logits(rows, z, "topk", 5)
    back = torch.from_numpy(decode_logits(rows, "topk", 5, 40)).double()
    q = torch.softmax(back, -1)
    # exact given the stored fp16 numbers: p_i = e^v_i / (sum_top e^v + e^rest_lse)
    v = torch.from_numpy(rows["top_val"].astype(np.float64))
    rest = torch.from_numpy(rows["rest_lse"].astype(np.float64))
    denom = v.exp().sum(-1) + rest.exp()
    idx = torch.from_numpy(rows["top_idx"].astype(np.int64))
    assert torch.allclose(q.gather(-1, idx), v.exp() / denom[..., None], rtol=1e-5)
    # and close to the teacher's own top-k probabilities and tail mass (fp16 rounding)
    p = torch.softmax(torch.from_numpy(z).double(), -1)
    top = p.topk(5, dim=-1)
    assert torch.equal(idx, top.indices)
    assert torch.allclose(q.gather(-1, idx), top.values, rtol=1e-2)
    assert torch.allclose(1 - q.gather(-1, idx).sum(-1), 1 - top.values.sum(-1), rtol=1e-2)


def test_non_finite_teacher_logits_are_refused():
    rows = np.zeros(2, row_dtype(4, "int8"))
    with pytest.raises(RecordError, match="non-finite"):
        encode_logits(rows, np.array([[[0, 1, np.nan, 2]]] * 2, np.float32), "int8")


def test_one_float16_limit_for_records_and_the_self_table(tmp_path):
    # Records refuse logits beyond HALF_SAFE; the NWSD self table clamps to it: both finite.
    from pointkd.records.format import HALF_SAFE
    from pointkd.training.self_target import SelfTable

    assert HALF_SAFE < float(np.finfo(np.float16).max)
    rows = np.zeros(1, row_dtype(4, "fp16"))
    encode_logits(rows, np.array([[[HALF_SAFE, 0, 0, 0]]], np.float32), "fp16")
    with pytest.raises(RecordError, match="float16 range"):
        encode_logits(rows, np.array([[[HALF_SAFE * 1.01, 0, 0, 0]]], np.float32), "fp16")
    table = SelfTable(2, 4, tmp_path / "self.npy")
    table.update(torch.tensor([1]), torch.tensor([[1e6, -1e6, 7.0, 0.0]]))
    logits, seen = table.lookup(torch.tensor([0, 1]))
    assert seen.tolist() == [False, True]
    expected = np.float16(HALF_SAFE).item()
    assert logits[1].tolist() == [expected, -expected, 7.0, 0.0]


def test_implicit_indices_and_replay_is_exact(setup, ds):
    """Row r is copy k = r // N of shape r % N, and replaying a row's stored params + seed
    gives bit-for-bit the cloud the teacher saw (probe logits, fp32 -> exact)."""
    root, teacher, _ = setup
    spec_cfg = root / "aug.yaml"
    spec_cfg.write_text("augment:\n  rotate: true\n  dropout: 0.3\n  subsample: 48\n")
    out = rec(root / "fp32", [teacher], logits="fp32", k=2, augment=augment_spec(spec_cfg))
    rs = open_records(out, data=ds)
    assert rs.spec.rotate and rs.spec.subsample == 48 and len(rs) == 2 * len(ds)
    idx = np.random.default_rng(0).permutation(len(rs))[:37]  # not aligned to any batch
    batch = rs.rows(idx)
    assert np.array_equal(batch.sample, idx % len(ds)) and np.array_equal(batch.k, idx // 48)
    assert np.array_equal(rs.row_index(batch.sample, batch.k), idx)
    assert torch.equal(batch.logits, expected_logits(ds, batch, rs.spec))
    # stored params are the keyed parameters of (seed, sample, k), rounded to fp16
    keys = augment.row_keys(0, torch.from_numpy(batch.sample), torch.from_numpy(batch.k))
    params, seeds = augment.keyed_params(keys, rs.spec)
    assert torch.equal(params.half().float(), batch.params) and torch.equal(seeds, batch.seeds)


@pytest.mark.parametrize("logits, topk, tol", [("fp16", 0, 2e-3), ("int8", 0, 1e-2),
                                               ("int8", 4, 2e-3)])
def test_recorded_encodings_decode_close_to_the_teacher(setup, ds, tmp_path, logits, topk, tol):
    _, teacher, _ = setup
    rs = open_records(rec(tmp_path / "r", [teacher], logits=logits, topk=topk))
    batch = rs.rows(np.arange(len(rs)))
    z = expected_logits(ds, batch, rs.spec)
    if topk:  # the top-k logits themselves are stored (fp16)
        # compare values, not indices: the probe's logits have ties
        assert torch.allclose(batch.logits.topk(topk, dim=1).values, z.topk(topk, dim=1).values,
                              atol=tol)
    else:
        assert torch.allclose(batch.logits, z, atol=tol)


def test_several_teachers_mean_and_each(setup, ds, tmp_path):
    _, t1, _ = setup
    t2 = make_teacher(tmp_path / "t2.pt", ds, scale=3.0)
    mean = open_records(rec(tmp_path / "mean", [t1, t2], logits="fp32"))
    each = open_records(rec(tmp_path / "each", [t1, t2], logits="fp32", combine="each"))
    a, b = mean.rows(np.arange(20)), each.rows(np.arange(20))
    assert a.per_teacher is None and b.per_teacher.shape == (20, 2, 12)
    z1 = expected_logits(ds, b, each.spec)
    assert torch.equal(b.per_teacher[:, 0], z1)
    assert torch.allclose(b.per_teacher[:, 1], 3 * z1)
    assert torch.allclose(a.logits, 2 * z1) and torch.allclose(b.logits, a.logits)
    assert each.manifest["bytes_per_row"] == 22 + 2 * 12 * 4
    assert len(read_manifest(tmp_path / "each")["teachers"]) == 2


def test_voted_records_average_the_replayed_cloud_and_its_rescaled_views(setup, ds, tmp_path):
    """`--votes 2`: each row stores the teacher's mean over the very cloud the student replays
    and two views of it scaled per axis by factors derived from the row's seed; the row's
    augmentation itself is the unvoted recording's."""
    _, teacher, plain = setup
    out = rec(tmp_path / "voted", [teacher], logits="fp32", votes=2)
    rs = open_records(out, data=ds)
    batch = rs.rows(np.arange(len(rs)))
    unvoted = open_records(plain).rows(np.arange(len(rs)))
    assert torch.equal(batch.params, unvoted.params) and torch.equal(batch.seeds, unvoted.seeds)
    x = augment.apply(torch.from_numpy(ds.points)[batch.sample], batch.params, batch.seeds,
                      rs.spec)
    scales = augment.vote_scales(batch.seeds, 2)
    low, high = augment.VOTE_SCALE
    assert scales.shape == (len(rs), 2, 3) and low <= scales.min() and scales.max() < high
    probe = Probe(ds.num_classes)
    want = (probe(x) + probe(x * scales[:, None, 0]) + probe(x * scales[:, None, 1])) / 3
    assert torch.allclose(batch.logits, want, atol=1e-6)
    assert not torch.allclose(batch.logits, probe(x), atol=1e-2)  # the views did count
    assert rs.manifest["logits"]["votes"] == 2
    assert rs.manifest["logits"]["vote_scale"] == list(augment.VOTE_SCALE)
    assert "each teacher voted: mean over the replayed cloud and 2 views" in info(str(out))
    assert "votes" not in open_records(plain).manifest["logits"]  # unvoted sets unchanged


def test_online_teacher_votes_give_the_recorded_target(setup, ds):
    """Online KD with distill.teacher_votes asks the teacher exactly what `record --votes`
    stores for the same cloud."""
    from pointkd.teachers.inference import logits_over_rows
    from pointkd.teachers.load import load_teachers
    from pointkd.training.sources import AugmentedShapes, Batch, OnlineTeacher

    _, teacher_path, _ = setup
    teachers = load_teachers([str(teacher_path)], "cpu")
    points = torch.from_numpy(ds.points)
    spec = augment.AugmentSpec()
    params, seeds, z, _, _ = next(logits_over_rows(teachers, points, spec, 0, range(0, 16),
                                                   16, "mean", torch.device("cpu"), votes=3))
    shapes = torch.arange(16)
    source = OnlineTeacher(AugmentedShapes(np.arange(len(ds)), spec, 0, len(ds)),
                           teachers[0], votes=3)
    x = augment.apply(points[shapes], params.float(), seeds, spec)
    online = source.target(Batch(shapes, params.float(), seeds, shapes), x)
    assert torch.equal(online, torch.from_numpy(z[:, 0]))


def test_online_ensemble_target_is_the_recorded_mean_of_its_teachers(setup, ds, tmp_path):
    """Online KD from several teachers asks them what `record --teacher A --teacher B` stores
    (combine=mean): their mean logits on the very cloud, with votes."""
    from pointkd.teachers.inference import logits_over_rows
    from pointkd.teachers.load import load_teachers
    from pointkd.training.sources import AugmentedShapes, Batch, OnlineTeacher

    _, teacher_path, _ = setup
    other = make_teacher(tmp_path / "other.pt", ds, scale=3.0)  # other logits, same classes
    teachers = load_teachers([str(teacher_path), str(other)], "cpu")
    points = torch.from_numpy(ds.points)
    spec = augment.AugmentSpec()
    params, seeds, z, _, _ = next(logits_over_rows(teachers, points, spec, 0, range(0, 16),
                                                   16, "mean", torch.device("cpu"), votes=2))
    shapes = torch.arange(16)
    source = OnlineTeacher(AugmentedShapes(np.arange(len(ds)), spec, 0, len(ds)), teachers,
                           votes=2)
    x = augment.apply(points[shapes], params.float(), seeds, spec)
    batch = Batch(shapes, params.float(), seeds, shapes)
    online = source.target(batch, x)
    assert torch.equal(online, torch.from_numpy(z[:, 0]))
    alone = OnlineTeacher(AugmentedShapes(np.arange(len(ds)), spec, 0, len(ds)), teachers[0],
                          votes=2).target(batch, x)
    assert not torch.allclose(online, alone)  # the second teacher counts


def test_teacher_for_other_classes_is_refused(tmp_path, ds):
    bad = tmp_path / "bad.pt"
    save_checkpoint({"model": "pointkd_test_probe", "num_classes": 5,
                     "class_names": list("abcde"), "state_dict": Probe(5).state_dict()}, bad)
    with pytest.raises(RecordError, match="classes"):
        rec(tmp_path / "r", [bad])
    assert not (tmp_path / "r").exists()  # checked before anything is written


def test_reader_is_picklable_and_fork_safe(setup):
    _, _, records_dir = setup
    rs = open_records(records_dir)
    first = rs.raw_rows(np.arange(48))
    clone = pickle.loads(pickle.dumps(rs))
    assert clone._maps is None and len(pickle.dumps(rs)) < 20_000  # no row data pickled
    with multiprocessing.get_context("fork").Pool(1) as pool:
        child = pool.apply(_read_in_child, (rs, np.arange(48)))
    assert child == first.tobytes() == clone.raw_rows(np.arange(48)).tobytes()
    with pytest.raises(RecordError, match="out of range"):
        rs.rows(np.array([len(rs)]))
    with pytest.raises(RecordError, match="out of range"):
        rs.row_index(np.array([0]), np.array([rs.k]))


def _read_in_child(rs, idx) -> bytes:
    return rs.raw_rows(idx).tobytes()


def test_info_and_verify_ok(cli, setup):
    _, teacher, records_dir = setup
    code, out, _ = cli("records", "verify", records_dir, "--data", DATA, "--teacher", teacher)
    assert code == 0 and out.startswith("OK") and "checksums match" in out
    code, out, _ = cli("records", "info", records_dir)
    assert code == 0 and "(complete)" in out and "K 3 x 48 shapes" in out
    assert "36 B per augmented sample vs 12,288 B" in out and "pointkd_test_probe" in out


def _damage(d: Path, how: str) -> None:
    shard, manifest_path = d / "shard-00000.bin", d / "manifest.json"
    m = json.loads(manifest_path.read_text())
    if how == "truncate":
        shard.write_bytes(shard.read_bytes()[:-10])
    elif how == "flip":
        data = bytearray(shard.read_bytes())
        data[123] ^= 0x01
        shard.write_bytes(bytes(data))
    elif how == "rowcount":
        m["total_rows"] += 1
    elif how == "gap":
        m["shards"][0]["row_start"] = 1
    elif how == "overlap":
        m["shards"].append(dict(m["shards"][0], rows=1))
    elif how == "missing_shard":
        shard.unlink()
    elif how == "no_manifest":
        manifest_path.unlink()
        return
    elif how == "incomplete":
        m["complete"] = False
    elif how == "spec_version":
        m["augment"]["version"] = 99
    elif how == "spec_key":
        m["augment"]["warp"] = 0.5
    manifest_path.write_text(json.dumps(m))


@pytest.mark.parametrize("how, message", [
    ("truncate", "truncated"), ("flip", "checksum mismatch"), ("rowcount", "K x shapes"),
    ("gap", "gap"), ("overlap", "overlap"), ("missing_shard", "missing"),
    ("no_manifest", "no manifest.json"), ("incomplete", "incomplete"),
    ("spec_version", "spec version 99"), ("spec_key", "unknown augmentation spec keys"),
])
def test_verify_detects_damage(cli, setup, tmp_path, how, message):
    _, _, records_dir = setup
    d = tmp_path / "r"
    shutil.copytree(records_dir, d)
    _damage(d, how)
    code, _, err = cli("records", "verify", d)
    assert code == 2 and message in err, err
    assert err.startswith("pointkd: error: ") and err.count("\n") == 1


@pytest.mark.parametrize("option", ["data", "teacher", "config"])
def test_verify_detects_records_made_for_other_inputs(cli, setup, ds, tmp_path, option):
    _, _, records_dir = setup
    if option == "data":
        args, message = ["--data", DATA + ",seed=3"], "another dataset"
    elif option == "teacher":
        args = ["--teacher", make_teacher(tmp_path / "other.pt", ds, scale=2.0)]
        message = "not made with teacher"
    else:
        (tmp_path / "c.yaml").write_text("augment:\n  rotate: true\n")
        args, message = ["--config", tmp_path / "c.yaml"], "another augmentation spec"
    code, _, err = cli("records", "verify", records_dir, *args)
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_no_silent_overwrite(setup, tmp_path):
    _, teacher, _ = setup
    out = rec(tmp_path / "r", [teacher])
    before = (out / "shard-00000.bin").read_bytes()
    with pytest.raises(OutputError, match="not empty"):
        rec(out, [teacher], seed=1)
    assert (out / "shard-00000.bin").read_bytes() == before
    rec(out, [teacher], seed=1, overwrite=True)
    assert open_records(out).manifest["seed"] == 1
    other = tmp_path / "precious"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="not a record set"):
        rec(other, [teacher], overwrite=True)
    assert (other / "notes.txt").read_text() == "keep me"


def test_resume_with_other_settings_is_refused(setup, ds, tmp_path):
    _, teacher, reference = setup
    out = tmp_path / "r"
    shutil.copytree(reference, out)
    m = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**m, "complete": False}))
    for change, name in [({"k": 4}, "k"), ({"seed": 1}, "seed"), ({"batch_size": 8},
                         "batch_size"), ({"logits": "fp16"}, "logits"),
                         ({"votes": 1}, "logits")]:
        with pytest.raises(RecordError, match=f"other settings .*{name}"):
            rec(out, [teacher], resume=True, **change)
    with pytest.raises(RecordError, match="teachers"):
        rec(out, [make_teacher(tmp_path / "t2.pt", ds, scale=2.0)], resume=True)
    with pytest.raises(RecordError, match="either --resume or --overwrite"):
        rec(out, [teacher], resume=True, overwrite=True)


def test_resume_cuts_back_a_torn_partial_shard(setup, tmp_path):
    """A kill mid-write leaves part of a batch (or of a row): resume drops it and recomputes
    whole batches; also a kill between shard rename and manifest."""
    _, teacher, reference = setup
    out = tmp_path / "r"
    # 2 whole batches, 5 rows and half a row of the third (with garbage in the torn part)
    ref, m = tear_shard(reference, out, rows=37)
    assert "INCOMPLETE: 37 of 144 rows" in info(str(out))
    with pytest.raises(RecordError, match="incomplete"):
        open_records(out)
    rec(out, [teacher], resume=True)
    assert (out / "shard-00000.bin").read_bytes() == ref
    assert read_manifest(out)["recording"]["rows"] == 144 - 32
    assert not (out / "shard-00000.bin.partial").exists()
    # killed after the rename, before the final manifest: resume only writes the manifest
    (out / "manifest.json").write_text(json.dumps(m))
    rec(out, [teacher], resume=True)
    assert open_records(out).manifest["complete"]
    assert read_manifest(out)["recording"]["rows"] == 0
    rec(out, [teacher], resume=True)  # resuming a complete recording: nothing to do


@pytest.mark.parametrize("change, message", [
    ({"k": 0}, "--k must be >= 1, got 0"), ({"batch_size": 0}, "--batch-size must be >= 1"),
    ({"topk": -1}, "--topk must be >= 0"), ({"combine": "sum"}, "--combine must be one of mean"),
    ({"votes": -1}, "--votes must be >= 0"),
    ({"logits": "bf16"}, "--logits must be one of fp32, fp16, int8, got 'bf16'"),
    ({"teacher_normalization": "z"}, "--teacher-normalization must be one of pointkd"),
    ({"teachers": []}, "no teacher checkpoint given"),
    ({"resume": True, "overwrite": True}, "choose either --resume or --overwrite")])
def test_record_config_checks_itself_before_any_work(tmp_path, change, message):
    cfg = RecordConfig(**{"teachers": ["missing.pt"], "data": DATA, "out": str(tmp_path / "r"),
                          **change})
    with pytest.raises(RecordError, match=message):
        record.run(cfg)
    assert not (tmp_path / "r").exists()
