"""Crash safety of `pointkd record`: SIGKILL a real recording process at random moments,
resume it each time, and get the bytes of an uninterrupted run (no row lost or doubled)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from conftest import SLOW_POINTKD

from pointkd.checkpoint import save_checkpoint
from pointkd.data import load_split
from pointkd.models import create_model

REPO = Path(__file__).resolve().parents[1]
DATA = "synthetic:version=1,train_per_class=4,test_per_class=1"  # 48 shapes
POINTS, K, BATCH = 64, 6, 8  # 288 rows in 36 batches


def _teacher(path: Path) -> Path:
    ds = load_split(DATA, "train", num_points=POINTS)
    torch.manual_seed(0)
    model = create_model("student_xs", ds.num_classes).eval()  # a real registered model
    save_checkpoint({"model": "student_xs", "model_kwargs": {}, "num_classes": ds.num_classes,
                     "class_names": ds.class_names, "num_points": POINTS,
                     "state_dict": model.state_dict()}, path)
    return path


def _command(teacher: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "pointkd", "record", "--teacher", str(teacher), "--data", DATA,
            "--out", str(out), "--k", str(K), "--batch-size", str(BATCH), "--seed", "7",
            "--device", "cpu", "--no-progress"]


def test_sigkill_at_random_moments_then_resume_is_byte_identical(tmp_path):
    teacher = _teacher(tmp_path / "teacher.pt")
    # same thread count in every process: the teacher's float sums may depend on it
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    reference = tmp_path / "reference"
    done = subprocess.run(_command(teacher, reference), env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr

    out = tmp_path / "killed"
    partial = out / "shard-00000.bin.partial"
    # a pause of 0.04 s after each batch: ~1.5 s of batches, room for 3 kills
    slow = [sys.executable, SLOW_POINTKD, "0.04"]
    rng = random.Random()
    kills = []
    for attempt in range(3):
        start = partial.stat().st_size if partial.exists() else -1
        proc = subprocess.Popen(slow + _command(teacher, out)[3:]
                                + (["--resume"] if attempt else []), env=env, cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while proc.poll() is None and time.time() < deadline:  # wait for new rows on disk
            if partial.exists() and partial.stat().st_size > max(start, 0):
                break
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
        kills.append(partial.stat().st_size // 36)
        assert not json.loads((out / "manifest.json").read_text())["complete"]

    done = subprocess.run(_command(teacher, out) + ["--resume"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["total_rows"] == K * 48
    assert 0 < manifest["recording"]["rows"] < K * 48, kills  # the last run only finished it
    killed = (out / "shard-00000.bin").read_bytes()
    ref = (reference / "shard-00000.bin").read_bytes()
    assert len(killed) == len(ref) == K * 48 * 36
    assert killed == ref, f"rows on disk at the kills: {kills}"
    assert manifest["shards"] == json.loads((reference / "manifest.json").read_text())["shards"]
    assert not partial.exists()
    print(f"rows on disk at the kills: {kills}")
