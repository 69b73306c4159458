"""The C++ kernels' life cycle: on by default, built once into a cache keyed by everything that
makes a binary CPU-specific, checked, and replaced by the PyTorch ops (with one line) when they
cannot be built; `POINTKD_NATIVE_OPS=0` / `--native-ops off` turns them off.

What the kernels compute is tested against the PyTorch ops in test_ops.py and
test_students.py; here, that they load and agree under torch CPU capabilities other than the
build machine's best, and in a build for a baseline x86-64 target (the portable paths)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import pytest

from pointkd.errors import PointKDWarning
from pointkd.models.kernels import native


@pytest.fixture
def fresh_loader(monkeypatch):
    """native's per-process state reset for the test, restored after it."""
    monkeypatch.setattr(native, "_module", None)
    monkeypatch.setattr(native, "_failed", False)
    monkeypatch.setattr(native, "_mode", None)
    monkeypatch.delenv("POINTKD_NATIVE_OPS", raising=False)
    return native


def test_on_by_default(fresh_loader):
    assert native.mode() == "auto"


@pytest.mark.parametrize("value, expected", [("0", "off"), ("off", "off"), ("1", "auto"),
                                             ("on", "auto"), ("auto", "auto"), ("", "auto")])
def test_environment_values(fresh_loader, monkeypatch, value, expected):
    monkeypatch.setenv("POINTKD_NATIVE_OPS", value)
    assert native.mode() == expected


def test_off_builds_nothing(fresh_loader, monkeypatch, tmp_path):
    monkeypatch.setenv("POINTKD_KERNEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("POINTKD_NATIVE_OPS", "0")
    assert not native.available()
    native.set_mode(None)
    monkeypatch.setenv("POINTKD_NATIVE_OPS", "auto")
    native.set_mode("off")  # the Python switch wins over the variable
    assert not native.available()
    assert not (tmp_path / "cache").exists()


def test_bad_value_is_an_error(fresh_loader, monkeypatch):
    monkeypatch.setenv("POINTKD_NATIVE_OPS", "maybe")
    with pytest.raises(native.NativeOpsError, match="POINTKD_NATIVE_OPS"):
        native.available()
    with pytest.raises(native.NativeOpsError, match="auto, off"):
        native.set_mode("fast")


def test_no_compiler_falls_back_with_one_line(fresh_loader, monkeypatch, tmp_path):
    """The forced fallback: no compiler. One PointKDWarning (one line in the CLI), then the
    PyTorch ops, and a student still runs."""
    import torch

    from pointkd.models import create_model

    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("POINTKD_KERNEL_CACHE", str(tmp_path / "cache"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not native.available()
        assert not native.available()  # decided once per process: no second attempt
    notes = [w for w in caught if issubclass(w.category, PointKDWarning)]
    assert len(notes) == 1 and "\n" not in str(notes[0].message)
    assert "CPU kernels unavailable" in str(notes[0].message)
    model = create_model("student_xs", 5).eval()
    with torch.inference_mode():
        assert torch.isfinite(model(torch.rand(2, 64, 3))).all()


def test_failed_build_falls_back(fresh_loader, monkeypatch, tmp_path):
    """A compiler that exists but cannot compile: the build fails, one line, the PyTorch ops."""
    fake = tmp_path / "cxx"
    fake.write_text('#!/bin/sh\ncase "$*" in\n  *--version*|*--help=target*) '
                    'echo "fakecc 1.0"; exit 0;;\nesac\necho "fakecc: cannot compile" >&2\n'
                    'exit 1\n')
    fake.chmod(0o755)
    monkeypatch.setenv("CXX", str(fake))
    monkeypatch.setenv("POINTKD_KERNEL_CACHE", str(tmp_path / "cache"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not native.available()
    notes = [str(w.message) for w in caught if issubclass(w.category, PointKDWarning)]
    assert any("compiling CPU kernels once" in n for n in notes)
    assert any("CPU kernels unavailable" in n for n in notes)
    assert all("\n" not in n for n in notes)


def test_cli_bad_value_is_one_line_exit_2(tmp_path):
    env = {**os.environ, "POINTKD_NATIVE_OPS": "fast"}
    proc = subprocess.run([sys.executable, "-m", "pointkd", "eval", "x.pt", "--data", "y"],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "POINTKD_NATIVE_OPS" in proc.stderr


def test_cache_key_covers_what_makes_a_binary_cpu_specific(fresh_loader, monkeypatch):
    """A different -march target, compiler, torch, or set of enabled instruction sets is a
    different cache directory: a shared home never serves one CPU's build to another."""
    key = native.build_key()
    assert {"march", "cflags", "compiler", "target", "torch"} <= set(key)
    base = native.cache_dir(key)
    for field in ("march", "compiler", "target", "torch", "cflags"):
        assert native.cache_dir({**key, field: key[field] + "-other"}) != base, field
    assert native.cache_dir(dict(key)) == base  # and the same inputs, the same directory
    monkeypatch.setenv("POINTKD_NATIVE_MARCH", "x86-64")
    if sys.platform.startswith("linux") and os.uname().machine == "x86_64":
        baseline = native.build_key()
        assert baseline["march"] == "x86-64" and baseline["target"] != key["target"]


_AGREE = textwrap.dedent("""
    import torch, warnings
    warnings.filterwarnings("error", message="CPU kernels unavailable")  # a fallback fails
    from pointkd.models.kernels import native
    from pointkd.models import ops
    assert native.available(), "kernels not built"
    g = torch.Generator().manual_seed(3)
    xyz = torch.rand(2, 700, 3, generator=g) * 2 - 1
    idx, nbr, sq, table = native.fps_knn(xyz, 64, 16, 64)
    ref_idx, ref_table = ops.fps_with_distances(xyz, 64)
    assert torch.equal(idx, ref_idx), "FPS samples"
    # the selection is exact on the kernel's own distances: the first k of a stable sort
    assert torch.equal(nbr, table.argsort(dim=-1, stable=True)[..., :16]), "neighbours"
    assert torch.equal(sq, table.gather(2, nbr)), "neighbour distances"
    feats, centre = torch.randn(2, 700, 40, generator=g), torch.randn(2, 64, 40, generator=g)
    assert torch.equal(native.gather_max(feats, nbr, centre, 0.2),
                       torch.nn.functional.leaky_relu(ops.gather_max(feats, nbr) + centre, 0.2))
    print(native.cache_dir().name, torch.backends.cpu.get_cpu_capability())
""")


def _run_check(env_extra: dict[str, str]) -> str:
    env = {**os.environ, **env_extra}
    env.pop("POINTKD_NATIVE_OPS", None)
    proc = subprocess.run([sys.executable, "-c", _AGREE], capture_output=True, text=True,
                          env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip()


@pytest.mark.slow
@pytest.mark.parametrize("capability", ["default", "avx2"])
def test_kernels_load_and_agree_under_another_torch_cpu_capability(capability):
    """The build for this CPU, loaded where torch picks other kernels for its own ops."""
    out = _run_check({"ATEN_CPU_CAPABILITY": capability})
    assert out.endswith(capability.upper()) or capability in out.lower()


@pytest.mark.slow
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="x86-64 baseline target")
def test_baseline_target_build_loads_and_agrees():
    """A build for plain x86-64 (no AVX): the kernels' portable paths, in their own cache
    directory beside this CPU's build."""
    native_dir = _run_check({}).split()[0]
    baseline_dir = _run_check({"POINTKD_NATIVE_MARCH": "x86-64"}).split()[0]
    assert baseline_dir != native_dir


def test_a_build_killed_while_holding_the_lock_does_not_hang_later_runs(tmp_path):
    """torch's builder leaves its `lock` file behind when killed; loading a cached build
    never waits on it, and a later build removes it (under pointkd's own flock)."""
    import shutil

    if not native.available():
        pytest.skip("the C++ kernels could not be built here")
    built = native.cache_dir()
    copy = tmp_path / "cache" / built.name
    shutil.copytree(built, copy, ignore=shutil.ignore_patterns("lock", "pointkd.lock"))
    (copy / "lock").write_text("")  # what a SIGKILLed torch build leaves
    env = {**os.environ, "POINTKD_KERNEL_CACHE": str(tmp_path / "cache")}
    env.pop("POINTKD_NATIVE_OPS", None)
    proc = subprocess.run([sys.executable, "-W", "always", "-c",
                           "from pointkd.models.kernels import native; print(native.available())"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "True", proc.stderr[-1000:]
    assert "compiling" not in proc.stderr  # loaded from the cache, not rebuilt
