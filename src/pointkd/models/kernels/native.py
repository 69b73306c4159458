"""Optional C++ kernels: the students' sampling and neighbour searches, the gathered max-pool
of their local stages (and of DGCNN's EdgeConv) in training, and the students' inference pool.

`fps_knn` runs farthest-point sampling and, inside the same loop, keeps each sample's k
nearest points and the first rows of the distance table — what `ops.fps_with_distances` +
`ops.nearest` compute with one PyTorch op per step, in one pass per sample. The results are
the same: distances are (dx·dx + dy·dy) + dz·dz with every product and sum rounded, in
`ops._fps` (one op each) and here (no fused multiply-add: `-ffp-contract=off`), on every
CPU and torch CPU capability, so the table and the samples are bit for bit equal (tested) and the
neighbours are the same set (among points at exactly the k-th distance it keeps the lowest
indices; topk keeps any), returned as the first k of a stable sort. The selection is
branch-free where it can be (`k_smallest`: a bound from the minima of 64 strided groups,
found by a bit search, then a vectorised compress of the few candidates below it and their
ranks by counting), because at 256 steps per cloud mispredicted branches, not arithmetic,
were its cost. `prefix_knn` gives the later stages' neighbourhoods (FPS prefixes
among FPS prefixes) from the coordinates with those same operations, so its distances equal
the table's entries without the table being kept.

`gather_max` is the students' inference pool, act(max_k table[nbr] + centre), in one pass
without the (B, M, K, C) rows: the same floats as the PyTorch ops.

`gathered_max` / `gathered_backward` are the forward and backward of that pool's chunked
PyTorch loops in `layers._BatchNormActMax`, one pass each; they agree within float rounding
(the batch statistics are summed in float64 instead of per-chunk float32 sums). Students
stay within the model's own float noise (gradients of student_l differ from the PyTorch ops
by less than they differ between 1 and 2 threads); DGCNN, whose later kNN runs in feature
space, turns such rounding into a few different neighbours (≈1e-3 in its logits in training).

On by default (`auto`): the C++ source, `native.cpp` beside this file, is compiled with the
system C++ compiler on first use (about a minute, once; a one-line notice says so) for the CPU
it runs on, then checked against the PyTorch ops on a small input; if there is no compiler,
the build fails or the check fails, one line says why and the PyTorch ops do the same work.
`POINTKD_NATIVE_OPS=0` (or `--native-ops off`, or `set_mode("off")`) turns them off.

The build cache (`$POINTKD_KERNEL_CACHE`, default `~/.cache/pointkd/kernels`) holds one
directory per binary, named by a hash of everything that makes a binary CPU-specific: the
source, the flags, the `-march` target and the instruction sets the compiler enables for it
on this CPU, the compiler's version and torch's version. A home directory shared by nodes of
different CPUs thus holds one build per kind of CPU, and no node loads another's (an AVX-512
binary on a CPU without it would die of SIGILL). `POINTKD_NATIVE_MARCH` sets the target
(default `native`; e.g. `x86-64-v3` for one build that every AVX2 node can run).
Traced/exported graphs (TorchScript, ONNX) always hold the PyTorch ops.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.machinery
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

from torch import Tensor

from pointkd.errors import ModelError, PointKDWarning
from pointkd.models.ops import _timed

__all__ = ["MODES", "NativeOpsError", "available", "build_key", "cache_dir", "fps_knn",
           "gather_max", "gathered_backward", "gathered_max", "mode", "prefix_knn", "set_mode"]


MODES = ("auto", "off")
_ALIASES = {"": "auto", "auto": "auto", "1": "auto", "on": "auto", "0": "off", "off": "off"}
_SOURCE = Path(__file__).with_name("native.cpp")
_FUNCTIONS = ("fps_knn", "prefix_knn", "gather_max_act", "gathered_max", "gathered_backward")

_module = None
_failed = False
_mode: str | None = None  # set_mode(); None = from POINTKD_NATIVE_OPS


class NativeOpsError(ModelError):
    """A bad POINTKD_NATIVE_OPS / --native-ops value."""


def set_mode(mode: str | None) -> None:
    """`"auto"` (build on first use, fall back to the PyTorch ops if that fails) or `"off"`;
    None goes back to the environment variable POINTKD_NATIVE_OPS."""
    global _mode
    if mode is not None and mode not in MODES:
        raise NativeOpsError(f"native ops mode must be one of {', '.join(MODES)}, got {mode!r}")
    _mode = mode


def mode() -> str:
    """The mode in force: set_mode()'s, else POINTKD_NATIVE_OPS (unset = auto; 1/on = auto,
    0/off = off)."""
    if _mode is not None:
        return _mode
    value = os.environ.get("POINTKD_NATIVE_OPS", "").strip().lower()
    if value not in _ALIASES:
        raise NativeOpsError(f"POINTKD_NATIVE_OPS must be auto, on/1 or off/0, got {value!r}")
    return _ALIASES[value]


def available() -> bool:
    """Whether the kernels are on and built: builds and checks them once per process."""
    global _module, _failed
    if _failed or mode() == "off":
        return False
    if _module is not None:
        return True
    try:
        module = _build()
        problem = _self_check(module)
    except Exception as exc:  # no compiler, no headers, no cache directory: fall back
        problem = f"{type(exc).__name__}: {_first_line(exc)}"
    if problem:
        _failed = True
        warnings.warn(f"CPU kernels unavailable ({problem}); using the PyTorch ops "
                      "(POINTKD_NATIVE_OPS=0 silences this)", PointKDWarning, stacklevel=2)
        return False
    _module = module
    return True


def build_key() -> dict[str, str]:
    """Everything the binary depends on besides the source: what goes into its cache name."""
    import torch

    march = os.environ.get("POINTKD_NATIVE_MARCH", "native").strip() or "native"
    cxx = os.environ.get("CXX", "c++")
    return {"march": march, "cflags": " ".join(_cflags(march)), "cxx": cxx,
            "compiler": _run([cxx, "--version"]).partition("\n")[0],
            "target": _target_features(cxx, march), "torch": torch.__version__,
            "python": sys.version.split()[0]}


def cache_dir(key: dict[str, str] | None = None) -> Path:
    """This CPU's build directory: the cache root / pointkd_native_<hash of source and key>."""
    key = build_key() if key is None else key
    root = os.environ.get("POINTKD_KERNEL_CACHE") or Path.home() / ".cache/pointkd/kernels"
    digest = hashlib.sha256(_SOURCE.read_bytes())
    digest.update(json.dumps(key, sort_keys=True).encode())
    return Path(root) / f"pointkd_native_{digest.hexdigest()[:16]}"


def _cflags(march: str) -> list[str]:
    # -ffp-contract=off: the FPS distances must be summed as torch sums them (explicit fma)
    return ["-O3", f"-march={march}", "-ffp-contract=off", "-fopenmp"]


def _target_features(cxx: str, march: str) -> str:
    """The -march value and the instruction sets the compiler enables for it here (`-march=
    native` resolves to this CPU's), as the compiler reports them."""
    out = _run([cxx, f"-march={march}", "-Q", "--help=target"])
    keep = [line.split()[0].rstrip("=") + "=" + line.split()[-1] for line in out.splitlines()
            if line.strip().startswith(("-march=", "-mtune="))]
    keep += sorted(line.split()[0] for line in out.splitlines()
                   if line.strip().startswith("-m") and line.rstrip().endswith("[enabled]"))
    return hashlib.sha256(" ".join(keep).encode()).hexdigest()[:16] + " " + " ".join(keep[:2])


def _run(cmd: list[str]) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout


def _build():
    """This CPU's kernels: imported from the cache, or built into it first. Loading a cached
    build never goes through torch's builder, whose lock file a process killed while holding
    it leaves behind (every later load would wait on it forever); a build holds an flock,
    which the kernel releases however its holder ends."""
    key = build_key()
    directory = cache_dir(key)
    binary = directory / f"{directory.name}.so"
    if binary.is_file():
        with contextlib.suppress(ImportError):  # a torn or foreign file: built anew below
            return _import(binary)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "pointkd.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; the others wait, then load
        if binary.is_file():
            try:
                return _import(binary)
            except ImportError:
                binary.unlink()
        warnings.warn(f"compiling CPU kernels once, ~1 min (cached in {directory})",
                      PointKDWarning, stacklevel=3)
        # torch's own lock: while we hold ours, only a builder that died can have left it
        (directory / "lock").unlink(missing_ok=True)
        _put_ninja_on_path()
        from torch.utils.cpp_extension import load

        return load(name=directory.name, sources=[str(_SOURCE)],
                    build_directory=str(directory), extra_cflags=_cflags(key["march"]),
                    extra_ldflags=["-fopenmp"], verbose=False)


def _import(binary: Path):
    """The built extension module, imported from its file (torch is already loaded)."""
    name = binary.stem
    loader = importlib.machinery.ExtensionFileLoader(name, str(binary))
    spec = importlib.util.spec_from_file_location(name, str(binary), loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def _put_ninja_on_path() -> None:
    """torch runs `ninja` from PATH; a venv used without activating it has the `ninja`
    package (a dependency) but not its directory on PATH."""
    if shutil.which("ninja") is None:
        try:
            import ninja
        except ImportError:
            return  # the build then fails with torch's own message, and we fall back
        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


def _self_check(module) -> str:
    """The kernels against the PyTorch ops on one small cloud: the same FPS samples, the same
    distances (to float rounding), the same neighbours' distances and the same pool values.
    Returns what differs, or "" when all agree."""
    import torch

    from pointkd.models import ops

    g = torch.Generator().manual_seed(0)
    xyz = torch.rand(2, 300, 3, generator=g) * 2 - 1
    idx, nbr, sq, table = module.fps_knn(xyz, 32, 8, 32)
    ref_idx, ref_table = ops.fps_with_distances(xyz, 32)
    if not torch.equal(idx, ref_idx):
        return "self-check: FPS samples differ from the PyTorch ops"
    if not torch.allclose(table, ref_table[:, :32], rtol=1e-5, atol=1e-6):
        return "self-check: FPS distances differ from the PyTorch ops"
    ref_sq, _ = ref_table.sort(dim=-1)
    if not torch.allclose(sq.sort(-1).values, ref_sq[..., :8], rtol=1e-5, atol=1e-6):
        return "self-check: neighbour distances differ from the PyTorch ops"
    feats = torch.randn(2, 300, 37, generator=g)
    centre = torch.randn(2, 32, 37, generator=g)
    pooled = module.gather_max_act(feats, nbr, centre, 0.0)
    if not torch.equal(pooled, torch.relu(ops.gather_max(feats, nbr) + centre)):
        return "self-check: the pool differs from the PyTorch ops"
    return ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1][:200] if text else "no message"


@_timed
def fps_knn(xyz: Tensor, m: int, k: int, rows: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """FPS indices `(B, m)`, each sample's k nearest points `(B, m, k)` and their squared
    distances, and the distance rows of the first `rows` samples `(B, rows, N)`."""
    idx, nbr, sq, table = _module.fps_knn(xyz.detach().float().contiguous(), m, k, rows)
    return idx, nbr, sq.to(xyz.dtype), table.to(xyz.dtype)


def gathered_max(x: Tensor, index: Tensor, centre: Tensor, gamma: Tensor, shift: Tensor
                 ) -> list[Tensor]:
    """Forward of the training-mode gathered pool (`layers._BatchNormActMax`): top, winner
    rows, tied groups, Σ_k z, and per channel Σ(z − shift), Σ(z − shift)² in float64."""
    return _module.gathered_max(x.contiguous(), index.contiguous(), centre.contiguous(),
                                gamma.detach().float(), shift.float())


def gathered_backward(dx: Tensor, x: Tensor, index: Tensor, centre: Tensor, alpha: Tensor,
                      offset: Tensor, winner: Tensor, tied: Tensor, sparse: Tensor) -> None:
    """Fills `dx` (empty, like x) with the gathered pool's input gradient for x, as
    `layers._gathered_backward` computes it with PyTorch ops: (x·alpha)·cnt, then
    offset + centre·alpha into every neighbour's row and `sparse` into each untied winner."""
    _module.gathered_backward(dx, x.contiguous(), index.contiguous(), centre.contiguous(),
                              alpha, offset, winner, tied, sparse.contiguous())


@_timed
def prefix_knn(xyz: Tensor, idx: Tensor, m: int, refs: int, k: int) -> tuple[Tensor, Tensor]:
    """For the first m FPS samples `idx (B, M0)` of `xyz (B, N, 3)`, the k nearest of the
    first `refs` samples `(B, m, k)` (as sample positions; ties: lowest position) and their
    squared distances, equal to the entries of `ops.fps_with_distances`'s table."""
    nbr, sq = _module.prefix_knn(xyz.detach().float().contiguous(), idx, m, refs, k)
    return nbr, sq.to(xyz.dtype)


@_timed
def gather_max(table: Tensor, nbr: Tensor, centre: Tensor, slope: float) -> Tensor:
    """Inference pool of a local stage: `act(max_k table[b, nbr[b, m, k]] + centre[b, m])`
    with act a ReLU (slope 0) or LeakyReLU; `table (B, N, C)`, `nbr (B, M, K)`, float32. The
    same values as `ops.gather_max` + add + activation, without the `(B, M, K, C)` rows."""
    return _module.gather_max_act(table, nbr, centre, slope)
