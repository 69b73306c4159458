"""Output directories (issue 19, classes 1 and 2): `--overwrite` deletes only what pointkd
wrote into a directory it can prove is its own, an input is never an output, and one
exclusive lock per directory stops a second writer. The deletes and the races run as real
`python -m pointkd` processes."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, SLOW_POINTKD, run_cli_subprocess

from pointkd import rundir
from pointkd.checkpoint import save_checkpoint
from pointkd.cli import main as cli_main
from pointkd.config.stages import RecordConfig
from pointkd.data import load_split
from pointkd.errors import OutputError
from pointkd.models import create_model
from pointkd.stages import record

DATA = "synthetic:train_per_class=3,test_per_class=1"
POINTS = 32
TRAIN = ["--model", "student_xs", "--data", DATA, "train.epochs=1", f"data.num_points={POINTS}",
         "train.batch_size=8", "train.max_steps_per_epoch=1", "train.progress=false",
         "train.device=cpu"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
       "PYTHONPATH": str(REPO / "src")}


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` (relative path -> sha256), to prove nothing was touched; a
    lock file's content is the PID of its last holder, so only its presence counts."""
    return {str(p.relative_to(root)): "" if p.name == rundir.LOCK else
            hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return run_cli_subprocess(*args, timeout=300, env=ENV, cwd=cwd or REPO)


def in_process(*args) -> tuple[int, str, str]:
    """`pointkd ARGS` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def one_line_error(proc: subprocess.CompletedProcess, text: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("pointkd: error:") and proc.stderr.count("\n") == 1, proc.stderr
    assert text in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """An untrained student_xs checkpoint for the synthetic classes (enough to record)."""
    names = load_split(DATA, "train", POINTS).class_names
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    torch.manual_seed(0)
    save_checkpoint({"model": "student_xs", "model_kwargs": {}, "num_classes": len(names),
                     "class_names": names, "num_points": POINTS,
                     "state_dict": create_model("student_xs", len(names)).state_dict()}, path)
    return path


def make_records(teacher: Path, out: Path, **kw) -> Path:
    record.run(RecordConfig(teachers=[str(teacher)], data=DATA, out=str(out), **{
        "k": 2, "seed": 0, "logits": "int8", "topk": 0, "combine": "mean", "batch_size": 8,
        "device": "cpu", "progress": False, **kw}))
    return out


def test_overwrite_never_deletes_what_pointkd_did_not_write(tmp_path, teacher):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    records = make_records(teacher, tmp_path / "records")
    before = snapshot(tmp_path)
    one_line_error(cli("train", *TRAIN, "--out", precious, "--overwrite"),
                   "not a training run made by pointkd")
    one_line_error(cli("distill", "--records", records, "--student", "student_xs", "--data",
                       DATA, "--out", records, "--overwrite"), "can never be an input")
    for args, text in [  # the same checks, in this process (faster)
            (["train", *TRAIN, "--out", records, "--overwrite"], "a record set, not a training"),
            (["record", "--teacher", teacher, "--data", DATA, "--out", teacher.parent,
              "--overwrite"], "can never be an input"),
            (["train", *TRAIN, "--out", precious / "notes.txt"], "not a directory"),
            (["eval", teacher, "--data", DATA, "--out", precious], "not a pointkd run")]:
        code, _, err = in_process(*args)
        assert code == 2 and err.count("\n") == 1 and text in err, err
    assert snapshot(tmp_path) == before
    assert not (precious / rundir.LOCK).exists()  # a refused directory keeps no trace


def test_empty_cwd_or_parent_out_is_refused(tmp_path, monkeypatch):
    work = tmp_path / "a" / "work"
    work.mkdir(parents=True)
    (work / "thesis.tex").write_text("years of work")
    before = snapshot(tmp_path)
    proc = cli("train", *TRAIN, "--out", "", "--overwrite", cwd=work)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    monkeypatch.chdir(work)
    for out in (".", "..", "./", work, "/", Path.home()):
        for command in (["train", *TRAIN, "--overwrite"], ["eval", "x.pt", "--data", DATA]):
            code, _, err = in_process(*command, "--out", out)
            assert code == 2 and err.count("\n") == 1, err
            assert "current directory" in err or "refusing to write into" in err, err
    assert snapshot(tmp_path) == before


def test_overwrite_replaces_only_pointkds_files(tmp_path, teacher):
    out = make_records(teacher, tmp_path / "r")
    (out / "README.txt").write_text("my notes about this record set")
    make_records(teacher, out, overwrite=True)
    assert (out / "README.txt").read_text() == "my notes about this record set"
    assert rundir.read_marker(out) == "records"
    assert rundir.clear(out, "records") == ["manifest.json", "shard-00000.bin"]
    assert sorted(p.name for p in out.iterdir()) == [".pointkd", ".pointkd.lock", "README.txt"]


def test_legacy_directories_without_marker(tmp_path, teacher):
    """Made before markers existed: adopted when they hold only pointkd's files."""
    out = make_records(teacher, tmp_path / "legacy")
    (out / rundir.MARKER).unlink()
    (out / rundir.LOCK).unlink()
    before = snapshot(out)
    make_records(teacher, out, resume=True)  # complete: nothing to do, but readable/resumable
    assert {k: v for k, v in snapshot(out).items() if not k.startswith(".")} == before
    assert rundir.read_marker(out) == "records"  # adopted
    (out / rundir.MARKER).unlink()
    make_records(teacher, out, overwrite=True)
    other = tmp_path / "mixed"
    shutil.copytree(out, other)
    (other / rundir.MARKER).unlink()
    (other / "thesis.tex").write_text("not pointkd's")
    before = snapshot(other)
    with pytest.raises(OutputError, match="thesis.tex, which pointkd does not write"):
        make_records(teacher, other, overwrite=True)
    with pytest.raises(OutputError, match="not a record set made by pointkd"):
        make_records(teacher, other, resume=True)
    assert snapshot(other) == before


def test_failed_start_leaves_no_directory_behind(tmp_path):
    with pytest.raises(OutputError, match="nothing to resume"):
        rundir.open_output(tmp_path / "new" / "run", "run", resume=True, resume_needs="last.pt")
    assert not (tmp_path / "new").exists()


def _wait_for(condition, what: str, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"{what}: the process ended first: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_resume_while_recording_is_refused_then_sigkill_and_resume_work(tmp_path, teacher):
    """Issue 19, 2(a): `record --resume` during the recording used to append duplicate rows."""
    out = tmp_path / "r"
    args = [sys.executable, "-m", "pointkd", "record", "--teacher", str(teacher), "--data", DATA,
            "--out", str(out), "--k", "4", "--batch-size", "2", "--no-progress"]
    slow = [sys.executable, SLOW_POINTKD, "0.3", *args[3:]]  # a pause after each batch
    first = subprocess.Popen(slow, env=ENV, cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        partial = out / "shard-00000.bin.partial"
        _wait_for(lambda: partial.is_file() and partial.stat().st_size > 0, "rows", first)
        second = subprocess.run(args + ["--resume"], env=ENV, cwd=REPO, capture_output=True,
                                text=True, timeout=300)
        one_line_error(second, f"in use by another pointkd process (PID {first.pid})")
        assert first.poll() is None  # untouched, still recording
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    # the OS dropped the dead holder's lock: resume takes over and finishes the set
    done = subprocess.run(args + ["--resume"], env=ENV, cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    verified = cli("records", "verify", out)
    assert verified.returncode == 0 and verified.stdout.startswith("OK"), verified.stderr


def test_two_trainings_into_one_new_directory(tmp_path):
    """Issue 19, 2(b): both passed the emptiness check and mixed their files."""
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "pointkd", "train", *TRAIN,
                              "--out", str(out)], env=ENV, cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lock = out / rundir.LOCK
        _wait_for(lambda: lock.is_file() and lock.read_text().strip() == str(first.pid),
                  "the first run's lock", first)
        second = cli("train", *TRAIN[:1], "student_s", *TRAIN[2:], "--out", out)
        one_line_error(second, f"in use by another pointkd process (PID {first.pid})")
        assert first.wait(timeout=300) == 0, first.stderr.read()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert "name: student_xs" in (out / "config.yaml").read_text()
    assert torch.load(out / "best.pt", weights_only=True)["model"] == "student_xs"
