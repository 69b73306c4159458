"""Hostile-user audit, classes 1, 4 and 5: pointkd never writes through a link it finds in its
own directories, `record --resume` never builds on bytes that changed since it wrote them,
and a full or read-only disk is a one-line error that leaves nothing looking complete. Every
case runs `python -m pointkd` as a real process on real files (the full and read-only file
systems are real tmpfs mounts in a private mount namespace: `unshare -rm`)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, SLOW_POINTKD, needs_mounts, one_line_error, tear_shard

from pointkd import rundir
from pointkd.checkpoint import save_checkpoint
from pointkd.data import load_split
from pointkd.errors import OutputError
from pointkd.models import create_model
from pointkd.records import read_manifest

DATA = "synthetic:train_per_class=3,test_per_class=1"
POINTS = 32
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
       "PYTHONPATH": str(REPO / "src")}
TRAIN = ["train", "--model", "student_xs", "--data", DATA, "train.epochs=1",
         f"data.num_points={POINTS}", "train.batch_size=8", "train.max_steps_per_epoch=1",
         "train.progress=false", "train.device=cpu"]
USER_TEXT = "a user's file: must never change\n"


def pointkd(*args, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pointkd", *map(str, args)], env=env or ENV,
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)


def record_args(teacher: Path, out: Path, k: int = 4) -> list:
    return ["record", "--teacher", teacher, "--data", DATA, "--out", out, "--k", k,
            "--batch-size", 8, "--seed", 3, "--device", "cpu", "--no-progress"]


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


@pytest.fixture(scope="module")
def reference(teacher, tmp_path_factory) -> Path:
    """An uninterrupted recording (batches of 8 rows)."""
    out = tmp_path_factory.mktemp("ref") / "rec"
    done = pointkd(*record_args(teacher, out))
    assert done.returncode == 0, done.stderr
    return out


def sums_path(shard: Path) -> Path:
    """The batch checksums beside a partial shard (`records.writer.sums_path`)."""
    return shard.with_name(shard.name + ".partial.sums")


def user_file(tmp_path: Path) -> Path:
    path = tmp_path / "precious.txt"
    path.write_text(USER_TEXT)
    return path


# --- class 1: writes through links ------------------------------------------------------------

def test_lock_file_that_is_a_symlink_is_refused_and_the_target_untouched(tmp_path):
    """`train --out` used to exit 0 with the PID written into the user's file."""
    precious = user_file(tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    (out / rundir.LOCK).symlink_to(precious)
    one_line_error(pointkd(*TRAIN, "--out", out), ".pointkd.lock is a symbolic link")
    assert precious.read_text() == USER_TEXT
    assert sorted(p.name for p in out.iterdir()) == [rundir.LOCK]  # nothing else written
    # a dangling link is not created through either
    (out / rundir.LOCK).unlink()
    (out / rundir.LOCK).symlink_to(tmp_path / "created-through-link")
    one_line_error(pointkd(*TRAIN, "--out", out), "symbolic link")
    assert not (tmp_path / "created-through-link").exists()


def test_lock_file_that_is_not_a_regular_file_is_refused(tmp_path):
    """A FIFO would block the open forever; a hard link shares the user's file."""
    out = tmp_path / "run"
    out.mkdir()
    os.mkfifo(out / rundir.LOCK)
    one_line_error(pointkd(*TRAIN, "--out", out, timeout=120), "not a regular file")
    (out / rundir.LOCK).unlink()
    precious = user_file(tmp_path)
    os.link(precious, out / rundir.LOCK)
    one_line_error(pointkd(*TRAIN, "--out", out), "hard link")
    assert precious.read_text() == USER_TEXT


def test_resume_refuses_a_partial_shard_that_is_a_symlink(teacher, reference, tmp_path):
    """`record --resume` used to overwrite the link's target and mark the set complete with
    its bytes (the shard left a symlink)."""
    out = tmp_path / "torn"
    tear_shard(reference, out, rows=20)
    partial = out / "shard-00000.bin.partial"
    precious = tmp_path / "precious.bin"
    precious.write_bytes(partial.read_bytes())  # plausible bytes: the torn rows themselves
    before = precious.read_bytes()
    partial.unlink()
    partial.symlink_to(precious)
    one_line_error(pointkd(*record_args(teacher, out), "--resume"),
                   "shard-00000.bin.partial is a symbolic link")
    assert precious.read_bytes() == before
    assert not json.loads((out / "manifest.json").read_text())["complete"]
    assert not (out / "shard-00000.bin").exists()


def test_resume_refuses_a_final_shard_or_manifest_that_is_a_symlink(teacher, reference,
                                                                     tmp_path):
    out = tmp_path / "torn"
    ref, manifest = tear_shard(reference, out, rows=20)
    precious = tmp_path / "precious.bin"
    precious.write_bytes(ref)  # the right size: it used to be taken as the finished shard
    (out / "shard-00000.bin.partial").unlink()
    (out / "shard-00000.bin").symlink_to(precious)
    one_line_error(pointkd(*record_args(teacher, out), "--resume"),
                   "shard-00000.bin is a symbolic link")
    assert not json.loads((out / "manifest.json").read_text())["complete"]
    # the manifest's temp file planted as a link: the new manifest would have gone there
    (out / "shard-00000.bin").unlink()
    text = user_file(tmp_path)
    (out / "manifest.json.tmp").symlink_to(text)
    one_line_error(pointkd(*record_args(teacher, out), "--resume"),
                   "manifest.json.tmp is a symbolic link")
    assert text.read_text() == USER_TEXT


def test_eval_never_writes_through_a_link(teacher, tmp_path):
    """`eval --out D --overwrite` used to write the report into the file a link pointed to."""
    out = tmp_path / "ev"
    done = pointkd("eval", teacher, "--data", DATA, "--out", out, "--no-latency",
                   "--device", "cpu")
    assert done.returncode == 0, done.stderr
    precious = user_file(tmp_path)
    (out / "eval_test.json").unlink()
    (out / "eval_test.json").symlink_to(precious)
    one_line_error(pointkd("eval", teacher, "--data", DATA, "--out", out, "--no-latency",
                           "--device", "cpu", "--overwrite"), "eval_test.json is a symbolic link")
    assert precious.read_text() == USER_TEXT
    assert not list(out.glob("*.tmp"))


def test_safe_io_replaces_atomically_and_refuses_links(tmp_path):
    from pointkd import safe_io

    target = tmp_path / "f.json"
    safe_io.write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    (tmp_path / "f.json.tmp").write_text("left by a crash")  # pointkd's own temp: reused
    safe_io.write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]
    precious = user_file(tmp_path)
    link = tmp_path / "link.json"
    link.symlink_to(precious)
    with pytest.raises(OutputError, match="symbolic link"):
        safe_io.write_json(link, {})
    with pytest.raises(OutputError, match="symbolic link"):
        with safe_io.replacing(link) as f:
            f.write(b"x")
    (tmp_path / "g.tmp").symlink_to(precious)
    with pytest.raises(OutputError, match="g.tmp is a symbolic link"):
        safe_io.write_text(tmp_path / "g", "x")
    assert precious.read_text() == USER_TEXT


# --- class 4: a changed partial shard ---------------------------------------------------------

def _kill_recording_after_rows(teacher: Path, out: Path, rows: int) -> None:
    """A real `record` process, SIGKILLed once `rows` rows are in its partial shard."""
    proc = subprocess.Popen([sys.executable, SLOW_POINTKD, "0.2",  # a pause after each batch
                             *map(str, record_args(teacher, out))], env=ENV, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    partial = out / "shard-00000.bin.partial"
    bpr = None
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if bpr is None and (out / "manifest.json").is_file():
                bpr = json.loads((out / "manifest.json").read_text())["bytes_per_row"]
            if bpr and partial.is_file() and partial.stat().st_size >= rows * bpr:
                break
            time.sleep(0.01)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_resume_detects_a_byte_flipped_in_the_partial_shard(teacher, reference, tmp_path):
    """The checksum used to be taken over the damaged bytes: the set verified as OK."""
    out = tmp_path / "killed"
    _kill_recording_after_rows(teacher, out, rows=24)
    partial = out / "shard-00000.bin.partial"
    assert sums_path(out / "shard-00000.bin").stat().st_size >= 3 * 32  # a sum per batch
    bpr = read_manifest(reference)["bytes_per_row"]
    data = bytearray(partial.read_bytes())
    data[8 * bpr + 5] ^= 0x01  # one bit of the second batch (rows 8-15)
    partial.write_bytes(bytes(data))
    one_line_error(pointkd(*record_args(teacher, out), "--resume"), "shard-00000.bin.partial: "
                   "rows 8-15 do not match the checksums written with them")
    assert partial.read_bytes() == bytes(data)  # nothing appended, nothing cut
    assert not json.loads((out / "manifest.json").read_text())["complete"]
    # put the bit back: the very same resume now completes the set, byte for byte
    data[8 * bpr + 5] ^= 0x01
    partial.write_bytes(bytes(data))
    done = pointkd(*record_args(teacher, out), "--resume")
    assert done.returncode == 0, done.stderr
    assert (out / "shard-00000.bin").read_bytes() == (reference / "shard-00000.bin").read_bytes()
    assert not sums_path(out / "shard-00000.bin").exists()  # not needed once complete
    assert pointkd("records", "verify", out).returncode == 0


def test_resume_checks_a_shard_renamed_before_its_manifest(teacher, reference, tmp_path):
    """Killed between the shard's rename and the final manifest: the finished shard is
    checked against the batch sums too before the set is declared complete."""
    out = tmp_path / "renamed"
    ref, _ = tear_shard(reference, out, rows=0)
    (out / "shard-00000.bin.partial").unlink()
    flipped = bytearray(ref)
    flipped[-1] ^= 0x80
    (out / "shard-00000.bin").write_bytes(bytes(flipped))
    batch = 8 * read_manifest(reference)["bytes_per_row"]
    sums_path(out / "shard-00000.bin").write_bytes(b"".join(
        hashlib.sha256(ref[i:i + batch]).digest() for i in range(0, len(ref), batch)))
    last = read_manifest(reference)["total_rows"] - 1
    one_line_error(pointkd(*record_args(teacher, out), "--resume"),
                   f"shard-00000.bin: rows {last - 7}-{last} do not match")
    assert not json.loads((out / "manifest.json").read_text())["complete"]


def test_resume_of_a_partial_without_checksums_is_refused(teacher, reference, tmp_path):
    out = tmp_path / "old"
    tear_shard(reference, out, rows=20)
    sums_path(out / "shard-00000.bin").unlink()
    one_line_error(pointkd(*record_args(teacher, out), "--resume"),
                   "rows cannot be checked", "--overwrite")


# --- class 5: a full or read-only disk --------------------------------------------------------



def in_small_fs(mount: Path, script: str, size: str, timeout: float = 300,
                ) -> subprocess.CompletedProcess:
    """Run shell `script` with a fresh tmpfs of `size` mounted at `mount` (private to it);
    $PK is `python -m pointkd`. What the script leaves under $KEEP (a host directory) stays."""
    mount.mkdir(parents=True, exist_ok=True)
    keep = mount.parent / (mount.name + "-kept")
    keep.mkdir(exist_ok=True)
    env = {**ENV, "PK": f"{sys.executable} -m pointkd", "KEEP": str(keep), "M": str(mount)}
    return subprocess.run(["unshare", "-rm", "sh", "-c",
                           f"mount -t tmpfs -o size={size} tmpfs \"$M\" && {script}"],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def _stderr_of(text: str, marker: str) -> str:
    """The stderr a script saved between `marker` lines."""
    return text.split(f"<{marker}>\n", 1)[1].split(f"</{marker}>", 1)[0]


@needs_mounts
def test_record_on_a_full_disk_is_one_line_and_resumes_after_space_is_freed(teacher, reference,
                                                                           tmp_path):
    """A full disk used to end `record` in an OSError traceback."""
    rec = f"$PK {' '.join(map(str, record_args(teacher, Path('$M/rec'))))}"
    proc = in_small_fs(tmp_path / "small", f"""
        {rec} 2> "$KEEP/full.err"; echo "full rc=$?"
        echo "<full>"; cat "$KEEP/full.err"; echo "</full>"
        cp -a "$M/rec" "$KEEP/after-full"
        mount -o remount,size=4m "$M"
        {rec} --resume 2> "$KEEP/resumed.err"; echo "resumed rc=$?"; cat "$KEEP/resumed.err"
        cp "$M/rec/shard-00000.bin" "$KEEP/shard.bin"
        """, size="20k")
    assert proc.returncode == 0, proc.stderr
    assert "full rc=2" in proc.stdout, proc.stdout
    err = _stderr_of(proc.stdout, "full")
    assert err.startswith("pointkd: error:") and err.count("\n") == 1, err
    assert "no space left on device" in err and "rec/" in err, err
    kept = tmp_path / "small-kept"
    after = kept / "after-full"
    # nothing looks complete: no finished shard, an incomplete manifest (or none), no temp files
    assert not (after / "shard-00000.bin").exists()
    assert not list(after.glob("*.tmp"))
    if (after / "manifest.json").exists():
        assert not json.loads((after / "manifest.json").read_text())["complete"]
    assert "resumed rc=0" in proc.stdout, proc.stdout
    assert (kept / "shard.bin").read_bytes() == (reference / "shard-00000.bin").read_bytes()


@needs_mounts
def test_eval_out_on_a_full_disk_leaves_no_report(teacher, tmp_path):
    """A full disk used to end `eval --out` in a traceback, with a torn eval_test.json."""
    proc = in_small_fs(tmp_path / "small", f"""
        $PK eval "{teacher}" --data "{DATA}" --no-latency --device cpu --out "$M/ev" \
            2> "$KEEP/err"; echo "rc=$?"
        echo "<err>"; cat "$KEEP/err"; echo "</err>"
        echo "<ls>"; ls -a "$M/ev"; echo "</ls>"
        """, size="12k")
    assert proc.returncode == 0, proc.stderr
    assert "rc=2" in proc.stdout, proc.stdout
    err = _stderr_of(proc.stdout, "err")
    assert err.startswith("pointkd: error:") and err.count("\n") == 1, err
    assert "no space left on device" in err and "/ev/" in err, err
    listed = set(_stderr_of(proc.stdout, "ls").split())
    assert listed <= {".", "..", rundir.MARKER, rundir.LOCK}, listed  # no report, no temp


@needs_mounts
def test_read_only_output_is_one_line(teacher, tmp_path):
    """`record --out` and `eval --out` on a read-only file system: refused before any work,
    naming the path."""
    rec = f"$PK {' '.join(map(str, record_args(teacher, Path('$M/new'))))}"
    proc = in_small_fs(tmp_path / "ro", f"""
        mkdir "$M/empty"; mount -o remount,ro "$M"
        {rec} 2> "$KEEP/rec.err"; echo "rec rc=$?"
        echo "<rec>"; cat "$KEEP/rec.err"; echo "</rec>"
        $PK eval "{teacher}" --data "{DATA}" --no-latency --device cpu --out "$M/empty" \
            2> "$KEEP/ev.err"; echo "ev rc=$?"
        echo "<ev>"; cat "$KEEP/ev.err"; echo "</ev>"
        """, size="1m")
    assert proc.returncode == 0, proc.stderr
    assert "rec rc=2" in proc.stdout and "ev rc=2" in proc.stdout, proc.stdout
    for name, path in (("rec", "/new"), ("ev", "/empty")):
        err = _stderr_of(proc.stdout, name)
        assert err.startswith("pointkd: error:") and err.count("\n") == 1, err
        assert "read-only file system" in err and path in err, err
