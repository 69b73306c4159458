"""Hostile-user audit, classes B and D: `train/distill --resume` continues only the run that
last.pt belongs to, and a full disk never leaves a checkpoint that looks complete.

B: resume compares the data fingerprint, class names, model, optimizer, distillation mode
and target settings (teachers, votes, alpha, beta, tau, ...) with the run's, and the last.pt
schema covers everything resume reads (epoch, history, best, optimizer and scheduler state,
the state dict's keys and shapes): a one-line error saying what differs, before anything in
the run directory changes (config.yaml included).
D: best.pt, last.pt and the metrics files of an epoch are written as one group (temp files,
fsync, rename): a full disk is one line naming the path and "no space left on device", the
previous epoch's files stay whole, and `--resume` continues once there is space. The full
disk is a real tmpfs in a private mount namespace (`unshare -rm`)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, needs_mounts

from pointkd.cli import main as cli_main
from pointkd.data import load_split
from pointkd.data.hdf5 import write_pointkd_hdf5

DATA = "synthetic:version=1,train_per_class=2,test_per_class=1"
OTHER_DATA = "synthetic:version=1,seed=5,train_per_class=2,test_per_class=1"
COMMON = ["--model", "student_xs", "data.num_points=32", "train.batch_size=8",
          "train.progress=false", "train.device=cpu"]


def train_args(out: Path, data: str, epochs: int, *extra: str) -> list[str]:
    return ["train", "--data", data, "--out", str(out), *COMMON, "--epochs", str(epochs),
            *extra]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A one-epoch run of student_xs on DATA (its last.pt is what every test tampers with)."""
    out = tmp_path_factory.mktemp("resume") / "run"
    assert cli_main(train_args(out, DATA, 1)) == 0
    return out


@pytest.fixture
def run(finished, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def refused_resume(cli, out: Path, data: str = DATA, *extra: str) -> str:
    """`train --resume` that must be refused: one line, exit 2, last.pt and config.yaml as
    they were."""
    before = {name: digest(out / name) for name in ("last.pt", "config.yaml")}
    code, _, err = cli(*train_args(out, data, 2, "--resume", *extra))
    assert code == 2, err
    assert err.startswith("pointkd: error:") and len(err.strip().splitlines()) == 1, err
    assert {name: digest(out / name) for name in before} == before
    return err


def tamper(out: Path, change) -> None:
    state = torch.load(out / "last.pt", weights_only=True)
    change(state)
    torch.save(state, out / "last.pt")


# --- B: the same run, or a one-line refusal ---------------------------------------------------

def test_resume_on_other_data_is_refused(cli, run):
    """It used to continue silently on the other dataset (same class count)."""
    err = refused_resume(cli, run, OTHER_DATA)
    assert "trained on other data" in err and OTHER_DATA in err, err


def test_resume_with_other_class_names_is_refused(cli, tmp_path):
    """Same points and labels (the same fingerprint), other names: the classes differ."""
    ds = load_split(DATA, "train", num_points=32, normalize=False)
    test = load_split(DATA, "test", num_points=32, normalize=False)
    data = tmp_path / "h5"
    write_pointkd_hdf5(data, {"train": ds, "test": test})
    out = tmp_path / "run"
    assert cli(*train_args(out, str(data), 1))[0] == 0
    names = (data / "shape_names.txt").read_text().split()
    (data / "shape_names.txt").write_text("".join(f"{n}\n" for n in reversed(names)))
    err = refused_resume(cli, out, str(data))
    assert "other class names" in err, err


def test_resume_in_another_distillation_mode_is_refused(cli, run, tmp_path):
    """A plain run resumed as online KD used to switch targets mid-run without a word."""
    teacher = shutil.copy(run / "best.pt", tmp_path / "teacher.pt")
    err = refused_resume(cli, run, DATA, "distill.online=true", f"distill.teacher={teacher}")
    assert "is a plain run, this one online" in err, err


@pytest.fixture(scope="module")
def online(finished, tmp_path_factory) -> Path:
    """A one-epoch online-KD run from two teachers (copies of `finished`'s best.pt)."""
    root = tmp_path_factory.mktemp("online")
    teachers = [shutil.copy(finished / "best.pt", root / name) for name in ("a.pt", "b.pt")]
    out = root / "run"
    assert cli_main(train_args(out, DATA, 1, *online_args(*teachers))) == 0
    return out


def online_args(*teachers: Path, votes: int = 1) -> list[str]:
    return ["distill.online=true", f"distill.teacher={teachers[0]}",
            f"distill.extra_teachers={json.dumps([str(t) for t in teachers[1:]])}",
            f"distill.teacher_votes={votes}"]


@pytest.mark.parametrize("change, text", [
    (lambda a, b: online_args(a), "teachers ['a.pt', 'b.pt'], now ['a.pt']"),
    (lambda a, b: online_args(b, a), "teachers ['a.pt', 'b.pt'], now ['b.pt', 'a.pt']"),
    (lambda a, b: online_args(a, b, votes=2), "teacher_votes 1, now 2"),
    (lambda a, b: [*online_args(a, b), "distill.tau=2"], "tau 4.0, now 2.0"),
], ids=["one teacher fewer", "teachers swapped", "other votes", "other temperature"])
def test_resume_of_online_kd_with_other_teachers_or_settings_is_refused(cli, online, tmp_path,
                                                                        change, text):
    """Only the mode used to be compared: a run resumed with one teacher fewer, or other
    votes or temperature, went on towards another target without a word."""
    run = shutil.copytree(online, tmp_path / "run")
    a, b = (online.parent / name for name in ("a.pt", "b.pt"))
    err = refused_resume(cli, run, DATA, *change(a, b))
    assert "other distillation settings" in err and text in err, err


def test_resume_of_online_kd_with_the_same_teachers_continues(cli, online, tmp_path):
    """The same teachers through other paths (the run moved) are the same run."""
    moved = tmp_path / "moved"
    shutil.copytree(online.parent, moved)
    code, _, err = cli(*train_args(moved / "run", DATA, 2, "--resume",
                                   *online_args(moved / "a.pt", moved / "b.pt")))
    assert code == 0, err
    assert torch.load(moved / "run" / "last.pt", weights_only=True)["epoch"] == 1


def first_key(d: dict):
    return next(iter(d))


TAMPERED = {  # name -> (change to last.pt, text of the one-line error)
    "extra weight": (lambda s: s["state_dict"].update({"bogus.weight": torch.zeros(3)}),
                     "unexpected bogus.weight"),
    "missing weight": (lambda s: s["state_dict"].pop(first_key(s["state_dict"])),
                       "its state_dict does not fit (missing"),
    "weight of another shape": (
        lambda s: s["state_dict"].update({first_key(s["state_dict"]): torch.zeros(2, 2)}),
        "other shapes for"),
    "empty optimizer": (lambda s: s.update(optimizer={}), "'optimizer' must hold"),
    "optimizer without its moments": (lambda s: s["optimizer"].update(state={}),
                                      "optimizer state is empty"),
    "optimizer moment of another shape": (
        lambda s: s["optimizer"]["state"][0].update(exp_avg=torch.zeros(7)),
        "'exp_avg' has shape (7,)"),
    "NaN optimizer moment": (
        lambda s: s["optimizer"]["state"][0]["exp_avg"].fill_(float("nan")),
        "'exp_avg' of parameter 0 is not finite"),
    "optimizer for fewer parameters": (
        lambda s: s["optimizer"]["state"].pop(s["optimizer"]["param_groups"][0]["params"].pop()),
        "does not fit this run: its optimizer state is for other parameters"),
    "optimizer state of no parameter": (
        lambda s: s["optimizer"]["param_groups"][0]["params"].pop(),
        "belongs to no parameter of its groups"),
    "string epoch": (lambda s: s.update(epoch="0"), "'epoch' must be an integer >= 0"),
    "negative epoch": (lambda s: s.update(epoch=-1), "'epoch' must be an integer >= 0"),
    "epoch ahead of the history": (lambda s: s.update(epoch=3), "'history' must be a list of 4"),
    "history row without its loss": (lambda s: s["history"][0].pop("train_loss"),
                                     "'history' row 0"),
    "best without val_oa": (lambda s: s["best"].pop("val_oa"), "'best' must be a mapping"),
    "empty scheduler": (lambda s: s.update(scheduler={}), "'scheduler' must hold"),
    "scheduler for other groups": (lambda s: s["scheduler"].update(base_lrs=[1e-3, 1e-3]),
                                   "scheduler is for another number of parameter groups"),
    "no data fingerprint": (lambda s: s.pop("data_fingerprint"), "lacks data_fingerprint"),
    "no optimizer": (lambda s: s.pop("optimizer"), "lacks optimizer (not a last.pt)"),
}


@pytest.mark.parametrize("name", TAMPERED)
def test_damaged_last_pt_is_a_one_line_error(cli, run, name):
    """Each used to end in a traceback from torch, or to resume from made-up state."""
    change, text = TAMPERED[name]
    tamper(run, change)
    err = refused_resume(cli, run)
    assert "last.pt" in err and text in err, err


def test_resume_still_continues_the_same_run(cli, run):
    code, _, err = cli(*train_args(run, DATA, 2, "--resume"))
    assert code == 0, err
    history = json.loads((run / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 1


# --- D: a full disk during training ---------------------------------------------------------



@needs_mounts
def test_full_disk_leaves_the_last_complete_epoch_and_resumes(tmp_path):
    """Epoch 1's files fit, epoch 2's do not: the old code died in a torch traceback and left
    last.pt.tmp (and a best.pt of epoch 2 beside the last.pt of epoch 1)."""
    mount, keep = tmp_path / "small", tmp_path / "kept"
    mount.mkdir()
    keep.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
           "PYTHONPATH": str(REPO / "src"), "M": str(mount), "KEEP": str(keep),
           "PK": f"{sys.executable} -m pointkd"}
    train = " ".join(f"'{a}'" for a in train_args(Path("$M/run"), DATA, 2)).replace(
        "'$M/run'", '"$M/run"')
    script = f"""
        mount -t tmpfs -o size=2500k tmpfs "$M" || exit 99
        $PK {train} > /dev/null 2> "$KEEP/full.err"; echo "full rc=$?"
        cp -a "$M/run" "$KEEP/after-full"
        mount -o remount,size=16m "$M"
        $PK {train} --resume > /dev/null 2> "$KEEP/resumed.err"; echo "resumed rc=$?"
        cp -a "$M/run" "$KEEP/resumed"
        """
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    err = (keep / "full.err").read_text()
    assert "full rc=2" in proc.stdout, (proc.stdout, err[-3000:])
    assert err.startswith("pointkd: error:") and err.count("\n") == 1, err
    assert "no space left on device" in err and "/run/" in err and ".pt" in err, err
    after = keep / "after-full"
    assert not list(after.glob("*.tmp")), sorted(p.name for p in after.iterdir())
    last = torch.load(after / "last.pt", weights_only=True)  # whole, and of epoch 1
    best = torch.load(after / "best.pt", weights_only=True)
    assert last["epoch"] == 0 and best["epoch"] == 0
    assert len(json.loads((after / "metrics.json").read_text())) == 1
    assert "resumed rc=0" in proc.stdout, (proc.stdout, (keep / "resumed.err").read_text())
    history = json.loads((keep / "resumed" / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert np.isfinite([h["train_loss"] for h in history]).all()
