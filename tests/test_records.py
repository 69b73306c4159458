"""Record store: encodings, exact replay, verify cases, resume safety, SIGKILL crash-safety."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pointkd import augment
from pointkd.checkpoint import save_checkpoint
from pointkd.data import load_split
from pointkd.errors import RecordError
from pointkd.models import create_model
from pointkd.records import (
    decode_logits,
    encode_logits,
    open_records,
    read_manifest,
    record,
    row_dtype,
)

DATA = "synthetic:train_per_class=6,test_per_class=2"
POINTS = 128
REPO = Path(__file__).resolve().parents[1]


def make_teacher(path: Path, seed: int = 0) -> Path:
    ds = load_split(DATA, "train", num_points=POINTS)
    torch.manual_seed(seed)
    model = create_model("student_xs", ds.num_classes).eval()
    save_checkpoint({"model": "student_xs", "model_kwargs": {}, "num_classes": ds.num_classes,
                     "class_names": ds.class_names, "num_points": POINTS,
                     "state_dict": model.state_dict()}, path)
    return path


def rec(out, teachers, **kw):
    args = dict(data=DATA, k=3, seed=0, logits="int8", topk=0, combine="mean", batch_size=16,
                device="cpu", resume=False, overwrite=False, augment_config=None, progress=False)
    args.update(kw)
    return record(teachers=[str(t) for t in teachers], out=str(out), **args)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("rec")
    teacher = make_teacher(root / "teacher.pt")
    rec(root / "records", [teacher])
    return root, teacher, root / "records"


def test_default_row_is_64_bytes_at_40_classes():
    assert row_dtype(40, "int8").itemsize == 64
    assert row_dtype(40, "fp16").itemsize == 102
    assert row_dtype(40, "fp32").itemsize == 182
    assert row_dtype(40, "int8", topk=5).itemsize == 14 + 8 + 5 + 10 + 2


@pytest.mark.parametrize("encoding, topk, tol", [("fp32", 0, 0.0), ("fp16", 0, 2e-2),
                                                 ("int8", 0, 0.2)])
def test_logit_encodings_roundtrip(encoding, topk, tol):
    rng = np.random.default_rng(0)
    z = (rng.normal(size=(50, 2, 40)) * 8).astype(np.float32)
    rows = np.zeros(50, row_dtype(40, encoding, topk, teachers=2))
    encode_logits(rows, z, encoding, topk)
    back = decode_logits(rows, encoding, topk, 40)
    assert back.shape == z.shape and np.abs(back - z).max() <= tol + 1e-7


def test_topk_keeps_top_probabilities_and_tail_mass():
    rng = np.random.default_rng(1)
    z = (rng.normal(size=(30, 1, 40)) * 4).astype(np.float32)
    rows = np.zeros(30, row_dtype(40, "int8", topk=5))
    encode_logits(rows, z, "topk", 5)
    back = decode_logits(rows, "topk", 5, 40)
    p, q = torch.softmax(torch.from_numpy(z), -1), torch.softmax(torch.from_numpy(back), -1)
    top = p.topk(5, dim=-1)
    assert torch.allclose(q.gather(-1, top.indices), top.values, atol=5e-3)
    assert torch.equal(q.topk(5, dim=-1).indices.sort(-1).values, top.indices.sort(-1).values)


def test_replay_reproduces_exactly_what_the_teacher_saw(setup):
    root, teacher_path, records_dir = setup
    rs = open_records(records_dir)
    ds = load_split(DATA, "train", num_points=POINTS)
    ckpt = torch.load(teacher_path, weights_only=True)
    teacher = create_model("student_xs", ds.num_classes)
    teacher.load_state_dict(ckpt["state_dict"])
    teacher.eval()
    idx = np.arange(16, 32)  # one whole recording batch: same composition as when recorded
    batch = rs.rows(idx)
    assert np.array_equal(batch.sample, idx % len(ds)) and np.array_equal(batch.k, idx // len(ds))
    x = augment.apply(torch.from_numpy(ds.points)[batch.sample], batch.params, batch.seeds,
                      rs.spec)
    with torch.inference_mode():
        z = teacher(x).numpy()[:, None]
    expected = np.zeros(len(idx), rs.dtype)
    encode_logits(expected, z, "int8", 0)
    assert np.array_equal(expected["logits"], rs.raw_rows(idx)["logits"])
    # the stored params are exactly the keyed parameters, rounded to fp16
    keys = augment.row_keys(0, torch.from_numpy(batch.sample), torch.from_numpy(batch.k))
    params, seeds = augment.keyed_params(keys, rs.spec)
    assert torch.equal(params.half().float(), batch.params) and torch.equal(seeds, batch.seeds)


def test_several_teachers_mean_and_each(tmp_path, setup):
    root, t1, _ = setup
    t2 = make_teacher(tmp_path / "t2.pt", seed=1)
    rec(tmp_path / "mean", [t1, t2], logits="fp32")
    rec(tmp_path / "each", [t1, t2], logits="fp32", combine="each")
    a, b = open_records(tmp_path / "mean"), open_records(tmp_path / "each")
    ra, rb = a.rows(np.arange(10)), b.rows(np.arange(10))
    assert rb.teacher_logits.shape == (10, 2, 12) and ra.teacher_logits is None
    assert torch.allclose(ra.logits, rb.logits, atol=1e-5)
    assert len(read_manifest(tmp_path / "each")["teachers"]) == 2


def _verify(cli, *args):
    code, out, err = cli("records", "verify", *map(str, args))
    return code, out, err


def test_verify_ok_and_info(cli, setup):
    root, teacher, records_dir = setup
    code, out, _ = _verify(cli, records_dir, "--data", DATA, "--teacher", teacher)
    assert code == 0 and "OK" in out
    code, out, _ = cli("records", "info", str(records_dir))
    assert code == 0 and "36 B per augmented sample" in out and "K 3" in out


@pytest.mark.parametrize("damage, message", [
    ("truncate", "bytes, expected"),
    ("flip", "checksum"),
    ("rowcount", "rows"),
    ("missing_shard", "missing"),
    ("no_manifest", "manifest.json"),
    ("incomplete", "incomplete"),
    ("spec_version", "version"),
])
def test_verify_detects_damage(cli, setup, tmp_path, damage, message):
    _, _, records_dir = setup
    d = tmp_path / "r"
    shutil.copytree(records_dir, d)
    shard, manifest_path = d / "shard-00000.bin", d / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    if damage == "truncate":
        shard.write_bytes(shard.read_bytes()[:-10])
    elif damage == "flip":
        data = bytearray(shard.read_bytes())
        data[100] ^= 0xFF
        shard.write_bytes(bytes(data))
    elif damage == "rowcount":
        manifest["total_rows"] += 1
    elif damage == "missing_shard":
        shard.unlink()
    elif damage == "no_manifest":
        manifest_path.unlink()
    elif damage == "incomplete":
        manifest["complete"] = False
    elif damage == "spec_version":
        manifest["augment"]["version"] = 99
    if damage not in ("no_manifest",):
        manifest_path.write_text(json.dumps(manifest))
    code, _, err = _verify(cli, d)
    assert code == 2 and message in err, err
    assert err.startswith("pointkd: error:") and err.count("\n") == 1


def test_verify_detects_other_dataset_teacher_and_spec(cli, setup, tmp_path):
    _, _, records_dir = setup
    code, _, err = _verify(cli, records_dir, "--data", "synthetic:train_per_class=6,seed=3")
    assert code == 2 and "another dataset" in err
    other = make_teacher(tmp_path / "other.pt", seed=5)
    code, _, err = _verify(cli, records_dir, "--teacher", other)
    assert code == 2 and "teacher" in err
    cfg = tmp_path / "c.yaml"
    cfg.write_text("augment:\n  rotate: true\n")
    code, _, err = _verify(cli, records_dir, "--config", cfg)
    assert code == 2 and "augmentation spec" in err


def test_no_silent_overwrite_and_resume_checks(setup, tmp_path):
    _, teacher, _ = setup
    out = tmp_path / "r"
    rec(out, [teacher])
    with pytest.raises(RecordError, match="not empty"):
        rec(out, [teacher])
    with pytest.raises(RecordError, match="already complete"):
        rec(out, [teacher], resume=True)
    (out / "progress.json").write_text(json.dumps({"k": 99}))
    with pytest.raises(RecordError, match="different settings"):
        rec(out, [teacher], resume=True)
    rec(out, [teacher], overwrite=True)
    assert open_records(out).k == 3


def test_sigkill_at_random_moments_then_resume_is_byte_identical(setup, tmp_path):
    """Kill a real `pointkd record` process 3 times at random moments; the resumed result
    must equal an uninterrupted run byte for byte (no row lost or duplicated)."""
    _, teacher, reference = setup
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "pointkd", "record", "--teacher", str(teacher), "--data", DATA,
           "--out", str(out), "--k", "3", "--batch-size", "16", "--device", "cpu",
           "--no-progress", "--logits", "int8"]
    env = {**os.environ, "POINTKD_RECORD_DELAY": "0.05"}  # slow batches: room to kill mid-run
    rng = random.Random(0)
    for attempt in range(3):
        proc = subprocess.Popen(cmd + (["--resume"] if attempt else []), cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        partial = out / "shard-00000.bin.partial"
        deadline = time.time() + 60
        start_size = partial.stat().st_size if partial.exists() else 0
        while time.time() < deadline and proc.poll() is None:
            if partial.exists() and partial.stat().st_size > start_size:
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not (out / "manifest.json").exists(), "finished before it could be killed"
    proc = subprocess.run(cmd + ["--resume"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (out / "shard-00000.bin").read_bytes() == (reference / "shard-00000.bin").read_bytes()
    assert not (out / "progress.json").exists()
