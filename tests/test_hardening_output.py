"""Hostile-user audit, class 3: `eval --out` never silently replaces an earlier report, and
progress bars (carriage-return redraws) go only to a terminal, never into a redirected log.
Real `python -m pointkd` processes; the terminal is a real pseudo-terminal."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, one_line_error

from pointkd.checkpoint import save_checkpoint
from pointkd.data import load_split
from pointkd.models import create_model

DATA = "synthetic:train_per_class=3,test_per_class=1"
POINTS = 32
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
       "PYTHONPATH": str(REPO / "src")}


def pointkd(*args, stderr=subprocess.PIPE, env: dict | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """A real process; its output decoded as is (text mode would turn a bar's \r into \n)."""
    proc = subprocess.run([sys.executable, "-m", "pointkd", *map(str, args)], env=env or ENV,
                          cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, timeout=timeout)
    proc.stdout = proc.stdout.decode()
    proc.stderr = proc.stderr.decode() if proc.stderr is not None else None
    return proc


def checkpoint(path: Path, seed: int) -> Path:
    names = load_split(DATA, "train", POINTS).class_names
    torch.manual_seed(seed)
    save_checkpoint({"model": "student_xs", "model_kwargs": {}, "num_classes": len(names),
                     "class_names": names, "num_points": POINTS,
                     "state_dict": create_model("student_xs", len(names)).state_dict()}, path)
    return path


def evaluate(ckpt: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return pointkd("eval", ckpt, "--data", DATA, "--out", out, "--no-latency", "--device", "cpu",
                   *extra)


def test_eval_out_never_silently_replaces_an_earlier_report(tmp_path):
    """A second `eval --out D` with another checkpoint used to replace eval_test.json."""
    first, second = checkpoint(tmp_path / "a.pt", 0), checkpoint(tmp_path / "b.pt", 1)
    out = tmp_path / "ev"
    assert evaluate(first, out).returncode == 0
    report = (out / "eval_test.json").read_bytes()
    png = (out / "confusion_test.png").read_bytes()
    one_line_error(evaluate(second, out), f"{out / 'eval_test.json'} exists", "--overwrite")
    assert (out / "eval_test.json").read_bytes() == report  # untouched
    assert (out / "confusion_test.png").read_bytes() == png
    # another split is another report: no conflict
    done = evaluate(second, out, "--split", "train")
    assert done.returncode == 0, done.stderr
    # --overwrite: replaced, both files, nothing left over
    done = evaluate(second, out, "--overwrite")
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "eval_test.json").read_text())["checkpoint"] == str(second)
    assert sorted(p.name for p in out.iterdir()) == [
        ".pointkd", ".pointkd.lock", "confusion_test.png", "confusion_train.png",
        "eval_test.json", "eval_train.json"]


def test_a_split_name_cannot_leave_the_out_directory(tmp_path):
    ckpt = checkpoint(tmp_path / "a.pt", 0)
    (tmp_path / "ev").mkdir()
    one_line_error(evaluate(ckpt, tmp_path / "ev", "--split", "../../escaped"),
                   "a split name cannot contain '/'")


def _on_a_terminal(args: list) -> str:
    """Run `pointkd ARGS` with stderr on a pseudo-terminal; returns what it showed there."""
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "pointkd", *map(str, args)], env=ENV,
                              cwd=REPO, stdout=subprocess.DEVNULL, stderr=follower,
                              timeout=300)
        os.close(follower)
        follower = -1
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert proc.returncode == 0
    return b"".join(chunks).decode(errors="replace")


def test_record_bars_only_on_a_terminal(tmp_path):
    ckpt = checkpoint(tmp_path / "t.pt", 0)
    args = ["record", "--teacher", ckpt, "--data", DATA, "--k", 4, "--batch-size", 8,
            "--device", "cpu"]
    log = tmp_path / "log"
    with open(log, "w") as f:
        done = pointkd(*args, "--out", tmp_path / "r1", stderr=f)
    assert done.returncode == 0
    assert b"\r" not in log.read_bytes() and "\r" not in done.stdout
    assert "record: 100%" in done.stdout  # plain lines instead, on stdout
    assert "\r" in _on_a_terminal([*args, "--out", tmp_path / "r2"])


@pytest.fixture
def folder_dataset(tmp_path) -> Path:
    """A class-folder dataset whose train split has 500 files: read with a progress bar."""
    root = tmp_path / "folders"
    rng = np.random.default_rng(0)
    for c in range(2):
        for split, count in (("train", 250), ("test", 2)):
            folder = root / f"class{c}" / split
            folder.mkdir(parents=True)
            for i in range(count):
                np.save(folder / f"s{i:03d}.npy", rng.normal(size=(32, 3)).astype(np.float32))
    return root


def test_reading_many_files_shows_no_bar_in_a_redirected_log(tmp_path, folder_dataset):
    env = {**ENV, "POINTKD_CACHE": "off"}
    log = tmp_path / "log"
    with open(log, "w") as f:
        done = pointkd("data", "info", folder_dataset, "--split", "train", "--num-points", 32,
                       stderr=f, env=env)
    assert done.returncode == 0
    assert b"\r" not in log.read_bytes(), log.read_bytes()[:300]
