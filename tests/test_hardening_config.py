"""Hostile-user audit, class 2: a config (`--config` or a `key=value` override) or a thread
count that would exhaust the machine is a one-line error, exit 2, well under a second of
work: YAML aliases of aliases ("billion laughs"), 20,000-deep nesting, a cycle, a file that
is not UTF-8 text or not text at all, `--threads 100000` (torch segfaults) or 3000000000."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, one_line_error

from pointkd.config.run import load_config
from pointkd.errors import ConfigError

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
       "PYTHONPATH": str(REPO / "src")}
DATA = "synthetic:train_per_class=1,test_per_class=1"


def laughs(levels: int = 9, width: int = 9) -> str:
    """A few hundred bytes that expand to width**levels values."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def flow_laughs(levels: int = 9, width: int = 9) -> str:
    """The same on one line, for an override value."""
    parts = [f"&l0 [{', '.join(['lol'] * width)}]"]
    parts += [f"&l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


def pointkd(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pointkd", *map(str, args)], env=ENV,
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)


def quick_config_error(path: Path | None = None, overrides: tuple[str, ...] = ()) -> str:
    """The ConfigError of loading, which must come in well under a second of CPU time (CPU, not
    wall time: a busy or paused VM once took 1.06 s of wall time for a millisecond case)."""
    t0 = time.process_time()
    with pytest.raises(ConfigError) as caught:
        load_config(path, overrides)
    assert time.process_time() - t0 < 1.0, "took too long"
    message = str(caught.value)
    assert "\n" not in message, message
    return message


HOSTILE_FILES = {
    "laughs": (laughs(), "expands to more than 100,000 values"),
    "merge_laughs": (laughs().replace("l8: &l8", "model:\n  kwargs: {<<: {a: *l7}}\nl8: &l8"),
                     "expands to more than 100,000 values"),
    "deep_flow": ("[" * 20_000, "nested deeper than 64 levels"),
    "deep_mapping": ("{a: " * 20_000, "nested deeper than 64 levels"),
    "cycle": ("model:\n  kwargs: &k {self: *k}\n", "an alias inside the value it names"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_FILES))
def test_hostile_yaml_in_a_config_file_is_refused_quickly(tmp_path, name):
    text, message = HOSTILE_FILES[name]
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    got = quick_config_error(path)
    assert got.startswith(f"config file {path}: ") and message in got, got


@pytest.mark.parametrize("value, message", [
    (flow_laughs(), "expands to more than 100,000 values"),
    ("[" * 20_000, "nested deeper than 64 levels"),
    ("&a [*a]", "an alias inside the value it names")])
def test_hostile_yaml_in_an_override_is_refused_quickly(value, message):
    got = quick_config_error(overrides=(f"model.kwargs={value}",))
    assert got.startswith("override 'model.kwargs': ") and message in got, got


def test_ordinary_aliases_still_work(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("optim: &opt {lr: 0.01, weight_decay: 0.0}\n"
                    "train: {<<: {epochs: 3}, batch_size: 4}\n")
    cfg = load_config(path)
    assert cfg.optim.lr == 0.01 and cfg.train.epochs == 3 and cfg.train.batch_size == 4


def test_hostile_config_in_a_real_process_is_one_line(tmp_path):
    """It used to run out of memory (or a RecursionError traceback)."""
    for name in ("laughs", "deep_flow"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(HOSTILE_FILES[name][0])
        one_line_error(pointkd("train", "--config", path, "--data", DATA, "--out",
                               tmp_path / "run"), HOSTILE_FILES[name][1], str(path))
    one_line_error(pointkd("train", "--data", DATA, "--out", tmp_path / "run",
                           f"model.kwargs={flow_laughs()}"), "override 'model.kwargs'")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("content, message", [
    (b"train:\n  epochs: 3  # caf\xe9\n", "is not UTF-8 text (byte 25 is 0xe9)"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "is not UTF-8 text (byte 0 is 0x89)"),
    (b"\x00\x01\x02binary", "is not valid YAML")])
def test_a_config_that_is_not_text_is_one_line_naming_it(tmp_path, content, message):
    """It used to be a UnicodeDecodeError traceback."""
    path = tmp_path / "weird.yaml"
    path.write_bytes(content)
    one_line_error(pointkd("train", "--config", path, "--data", DATA, "--out",
                           tmp_path / "run"), f"config file {path} {message}")
    assert not (tmp_path / "run").exists()


def test_a_huge_config_is_refused_before_reading_it(tmp_path):
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as f:
        f.truncate(1 << 30)  # sparse: a GiB of nothing
    got = quick_config_error(path)
    assert "is 1,073,741,824 bytes; a config is at most 1,048,576" in got, got


def test_record_config_uses_the_same_bounds(tmp_path):
    path = tmp_path / "lol.yaml"
    path.write_text(laughs())
    one_line_error(pointkd("record", "--teacher", "x.pt", "--data", DATA, "--out",
                           tmp_path / "rec", "--config", path), "expands to more than")
    assert not (tmp_path / "rec").exists()


MAX = 4 * (os.cpu_count() or 1)


@pytest.mark.parametrize("threads", ["100000", "3000000000", str(MAX + 1)])
@pytest.mark.parametrize("command", [
    ["eval", "x.pt", "--data", DATA],
    ["record", "--teacher", "x.pt", "--data", DATA, "--out", "never-made"],
    ["train", "--model", "student_xs", "--data", DATA, "--out", "never-made"]])
def test_thread_counts_are_bounded_on_the_command_line(command, threads):
    """`--threads 100000` used to segfault in torch, 3000000000 to overflow (traceback)."""
    proc = pointkd(*command, "--threads", threads)
    one_line_error(proc, f"argument --threads: must be <= {MAX}, got {threads}")
    assert not (REPO / "never-made").exists()


@pytest.mark.parametrize("threads", [MAX + 1, 4096, 100_000])
def test_train_threads_in_a_config_is_bounded(tmp_path, threads):
    got = quick_config_error(overrides=(f"train.threads={threads}",))
    assert got == f"config key 'train.threads' must be <= {MAX}, got {threads}", got
    path = tmp_path / "c.yaml"
    path.write_text(f"train:\n  threads: {threads}\n")
    assert "'train.threads' must be <=" in quick_config_error(path)


def test_thread_counts_within_the_bound_are_accepted():
    assert load_config(None, (f"train.threads={MAX}",)).train.threads == MAX
