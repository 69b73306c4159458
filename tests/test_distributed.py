"""torchrun scale-out with 2 gloo processes on 127.0.0.1: sharded recording (bytes identical to
one process, resumable per rank after SIGKILL), DDP offline distillation with the NWSD self
table shared across ranks, `--nproc` and SyncBatchNorm, and the sharding arithmetic."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SLOW_POINTKD, best_checkpoint_test_oa

from pointkd.checkpoint import save_checkpoint
from pointkd.data import load_split
from pointkd.distributed import Dist, strip_nproc
from pointkd.models import create_model
from pointkd.records import open_records
from pointkd.records.manifest import check_shard_ranges
from pointkd.records.writer import plan_shards
from pointkd.training.sources import epoch_positions

REPO = Path(__file__).resolve().parents[1]
DATA = "synthetic:version=1,train_per_class=4,test_per_class=1"  # 48 train shapes
POINTS, K, BATCH = 64, 5, 8  # 240 rows in 30 batches
# one thread per process in every run: float sums may depend on the thread count
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
       "POINTKD_DIST_TIMEOUT_MIN": "3"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=2",
            "--master-addr=127.0.0.1", f"--master-port={_free_port()}", "-m", "pointkd",
            *map(str, args)]


def _single(*args: str) -> list[str]:
    return [sys.executable, "-m", "pointkd", *map(str, args)]


def _run(cmd: list[str], **env) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, env={**ENV, **env}, cwd=REPO, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    return done


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dist") / "teacher.pt"
    ds = load_split(DATA, "train", num_points=POINTS)
    torch.manual_seed(0)
    model = create_model("student_xs", ds.num_classes).eval()
    save_checkpoint({"model": "student_xs", "model_kwargs": {}, "num_classes": ds.num_classes,
                     "class_names": ds.class_names, "num_points": POINTS,
                     "state_dict": model.state_dict()}, path)
    return path


def _record_args(teacher: Path, out: Path) -> list[str]:
    return ["record", "--teacher", teacher, "--data", DATA, "--out", out, "--k", K,
            "--batch-size", BATCH, "--seed", 3, "--device", "cpu", "--no-progress"]


def _kill_processes_mentioning(token: str) -> None:
    """SIGKILL torchrun and its workers: every process whose command line names `token`."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if token.encode() in cmdline:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


# --- the arithmetic ---------------------------------------------------------------------------

@pytest.mark.parametrize("n", [10, 11, 1])
def test_epoch_positions_deal_one_permutation_out_to_the_ranks(n):
    one = epoch_positions(n, epoch=3, seed=5, dist=Dist())
    assert sorted(one) == list(range(n))
    assert not np.array_equal(one, epoch_positions(n, epoch=4, seed=5, dist=Dist())) or n == 1
    shares = [epoch_positions(n, 3, 5, Dist(rank=r, world=2)) for r in range(2)]
    assert len(shares[0]) == len(shares[1]) == -(-n // 2)  # equal: DDP steps stay in lockstep
    merged = np.empty(2 * len(shares[0]), np.int64)
    merged[0::2], merged[1::2] = shares
    assert np.array_equal(merged[:n], one)  # the same permutation, dealt rank-strided
    assert set(merged[n:]) <= set(one)  # padding by wrap-around


@pytest.mark.parametrize("total,batch,world", [(240, 8, 2), (241, 8, 3), (5, 8, 4), (64, 64, 1)])
def test_plan_shards_tiles_the_rows_on_the_batch_grid(total, batch, world):
    shards = plan_shards(total, batch, world)
    check_shard_ranges({"k": 1, "data": {"num_shapes": total}, "total_rows": total,
                        "shards": shards}, "x")
    assert all(s["row_start"] % batch == 0 and s["rows"] > 0 for s in shards)
    assert len(shards) <= world and shards[0]["file"] == "shard-00000.bin"


def test_strip_nproc():
    assert strip_nproc(["train", "--nproc", "2", "--epochs", "1", "--nproc=3"]) == [
        "train", "--epochs", "1"]


# --- recording --------------------------------------------------------------------------------

def test_two_process_recording_equals_one_process_and_resumes_per_rank(teacher, tmp_path):
    ref = tmp_path / "single"
    _run(_single(*_record_args(teacher, ref)))

    # a 2-process recording, SIGKILLed (torchrun and both workers) once rows are on disk
    out = tmp_path / "two"
    # each worker pauses 0.05 s after each batch of rows
    slow = [*_torchrun()[:-2], SLOW_POINTKD, "0.05", *map(str, _record_args(teacher, out))]
    proc = subprocess.Popen(slow, env=ENV, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    partials = [out / "shard-00000.bin.partial", out / "shard-00001.bin.partial"]
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        if all(p.exists() and p.stat().st_size > 0 for p in partials):
            break
        time.sleep(0.01)
    _kill_processes_mentioning(str(out))
    proc.wait(timeout=60)
    assert proc.returncode != 0, "the recording finished before it could be killed"
    assert not json.loads((out / "manifest.json").read_text())["complete"]

    # one process cannot resume a 2-process recording: the shard layout differs
    wrong = subprocess.run(_single(*_record_args(teacher, out), "--resume"), env=ENV, cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and "number of processes" in wrong.stderr
    assert "Traceback" not in wrong.stderr

    _run(_torchrun(*_record_args(teacher, out), "--resume"))
    m = json.loads((out / "manifest.json").read_text())
    assert m["complete"] and [s["file"] for s in m["shards"]] == ["shard-00000.bin",
                                                                  "shard-00001.bin"]
    assert m["recording"]["processes"] == 2 and 0 < m["recording"]["rows"] < K * 48
    merged = b"".join((out / s["file"]).read_bytes() for s in m["shards"])
    assert merged == (ref / "shard-00000.bin").read_bytes()  # same rows, same bytes
    a, b = open_records(out), open_records(ref)
    rows = np.arange(len(a))
    assert torch.equal(a.rows(rows).logits, b.rows(rows).logits)
    verify = _run(_single("records", "verify", out, "--data", DATA, "--teacher", teacher))
    assert verify.stdout.startswith("OK:")


# --- training ---------------------------------------------------------------------------------

TRAIN = ["--data", DATA, "--device", "cpu", "train.batch_size=8", "train.eval_batch_size=64",
         "train.progress=true", "data.num_points=64", "optim.warmup_epochs=0"]


def test_two_process_offline_nwsd_distillation_and_resume(teacher, tmp_path):
    rec = tmp_path / "records"
    _run(_single(*_record_args(teacher, rec)))
    out = tmp_path / "student"
    args = ["distill", "--records", rec, "--student", "student_xs", "--out", out, "--epochs", 1,
            "--beta", "-0.2", "distill.nwsd_warmup_epochs=0", *TRAIN]
    done = _run(_torchrun(*args))
    assert done.stdout.count("done: best val OA") == 1  # rank 0 alone reports and writes
    history = json.loads((out / "metrics.json").read_text())
    train_shapes = 48 - 12  # val_fraction 0.1 of 48 stratified over 12 classes: 1 per class
    assert history[0]["epoch"] == 1 and history[0]["samples_per_s"] > 0
    state = torch.load(out / "last.pt", weights_only=True)
    # the self table holds what *both* ranks saw: every training shape after one epoch
    assert int(state["self_table"]["seen"].sum()) == train_shapes

    done = _run(_torchrun(*args[:-len(TRAIN)], *TRAIN, "train.epochs=2", "--resume"))
    results = json.loads((out / "results.json").read_text())
    assert results["epochs"] == 2 and results["mode"] == "offline-kd"
    # the reported test OA is that of the best checkpoint (children ran on one thread)
    assert results["test_oa"] == best_checkpoint_test_oa(out, DATA, 64, threads=1)


def test_nproc_relaunches_under_torchrun_and_scales_the_lr(tmp_path):
    out = tmp_path / "plain"
    done = _run(_single("train", "--model", "student_xs", "--out", out, "--epochs", 1,
                        "--nproc", 2, "optim.lr_scaling=linear", "optim.lr=0.001", *TRAIN))
    assert done.stdout.count("done: best val OA") == 1
    assert "lr_scaling: linear" in (out / "config.yaml").read_text()
    last = torch.load(out / "last.pt", weights_only=True)
    assert last["optimizer"]["param_groups"][0]["initial_lr"] == pytest.approx(0.002)  # 2 x lr
    ckpt = torch.load(out / "best.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])  # loads without DDP
    assert (out / "results.json").is_file()


def test_sync_batchnorm_on_cpu_is_a_clear_error(tmp_path):
    from pointkd.config.run import load_config
    from pointkd.errors import ConfigError
    from pointkd.stages import train

    cfg = load_config(None, [f"data.path={DATA}", "train.device=cpu", "train.sync_bn=true",
                             f"out={tmp_path / 'run'}", "model.name=student_xs"])
    with pytest.raises(ConfigError, match="sync_bn needs CUDA"):
        train.run(cfg)
