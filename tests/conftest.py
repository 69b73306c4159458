"""Shared test fixtures: real-data location, CLI runner, small thread budget."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import settings

from pointkd.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]
# `python SLOW_POINTKD SECONDS ARGS...`: pointkd with a pause after each batch of record rows
SLOW_POINTKD = str(REPO / "tests" / "slow_pointkd.py")
MODELNET = Path(os.environ.get("POINTKD_MODELNET", REPO.parent / "shared/data/modelnet40_1024"))

requires_modelnet = pytest.mark.skipif(
    not (MODELNET / "train.h5").is_file(),
    reason=f"real ModelNet40 not found at {MODELNET} (set POINTKD_MODELNET)",
)

torch.set_num_threads(min(2, torch.get_num_threads()))

# Hypothesis: CI (env CI set, as .ci/run does) replays the same derandomized examples every
# run, so a red build always means a code change; local runs keep exploring at random. Every
# counter-example found goes into its test as an explicit @example.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture
def modelnet_path() -> Path:
    if not (MODELNET / "train.h5").is_file():
        pytest.skip(f"real ModelNet40 not found at {MODELNET} (set POINTKD_MODELNET)")
    return MODELNET


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process: returns (exit_code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        code = cli_main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def run_cli_subprocess(*args: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """Run `python -m pointkd ...` in a child process (for kill/traceback tests)."""
    return subprocess.run(
        [sys.executable, "-m", "pointkd", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, cwd=kw.pop("cwd", REPO), **kw,
    )


def tear_shard(reference: Path, out: Path, rows: int) -> tuple[bytes, dict]:
    """Copy the one-shard record set `reference` to `out` as a recording killed mid-write:
    manifest incomplete, the shard back to `.partial` with `rows` whole rows and half a row of
    garbage. Returns (the complete shard's bytes, the torn manifest)."""
    import json
    import shutil

    from pointkd.records import read_manifest

    ref = (reference / "shard-00000.bin").read_bytes()
    bpr = read_manifest(reference)["bytes_per_row"]
    shutil.copytree(reference, out)
    m = json.loads((out / "manifest.json").read_text())
    m.update(complete=False)
    m["shards"][0]["sha256"] = None
    (out / "manifest.json").write_text(json.dumps(m))
    (out / "shard-00000.bin").unlink()
    (out / "shard-00000.bin.partial").write_bytes(ref[: rows * bpr] + b"\xff" * (bpr // 2))
    # the checksums a killed recording leaves beside it: one per whole batch written
    from pointkd.records.writer import batch_sums, sums_path

    whole = rows - rows % m["batch_size"]
    sums_path(out / "shard-00000.bin").write_bytes(batch_sums(ref[: whole * bpr],
                                                              m["batch_size"] * bpr))
    return ref, m


def best_checkpoint_test_oa(run_dir: Path, data: str, batch_size: int,
                            threads: int | None = None) -> float:
    """OA of `run_dir/best.pt` on the test split of `data`, counted here (argmax == label).

    A finished run reports this as `test_oa`; computed with the run's eval batch size (and,
    for runs in child processes, their thread count) it must agree exactly."""
    import numpy as np

    from pointkd.checkpoint import load_model
    from pointkd.data import load_split
    from pointkd.metrics import predict_logits

    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        model, meta = load_model(run_dir / "best.pt", "cpu")
        test = load_split(data, "test", num_points=meta["num_points"])
        pred = predict_logits(model, test.points, batch_size, "cpu").argmax(1).numpy()
    finally:
        torch.set_num_threads(before)
    return float(np.mean(pred == test.labels))


def one_line_error(proc: subprocess.CompletedProcess, *texts: str) -> None:
    """A child `pointkd` process failed as bad input must: exit 2, one `pointkd: error:` line
    naming each of `texts`."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert proc.stderr.startswith("pointkd: error:") and proc.stderr.count("\n") == 1, \
        proc.stderr[-3000:]
    for text in texts:
        assert text in proc.stderr, proc.stderr


def _unshare_works() -> bool:
    """Whether this machine lets a test mount a tiny tmpfs in a private mount namespace (the
    disk-full and read-only cases run on a real file system that way)."""
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


needs_mounts = pytest.mark.skipif(not _unshare_works(), reason="needs `unshare -rm` with tmpfs "
                                  "mounts (a private mount namespace)")


@pytest.fixture(scope="module")
def one_thread():
    """Immune to other processes on a busy 2-core machine: one torch thread for the module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_clouds(b: int, p: int, seed: int = 0) -> torch.Tensor:
    """`b` clouds of `p` points uniform in [-1, 1]^3, the same for the same seed."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, p, 3, generator=g) * 2 - 1
