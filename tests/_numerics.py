"""Float tolerances derived from the computation, not from one CPU's observed error.

A float32 result is compared with the same function computed in float64 (`float64_copy` of
the module on double inputs, or exactly), and the allowed error is

    max |actual - ref64|  <=  C * eps * n_eff * scale,      C = 4,  n_eff = sum_l sqrt(n_l)

  eps    the machine epsilon of actual's dtype (2^-23 for float32; eps = 2u, u the unit
         roundoff);
  n_l    the length of each sum behind the result: a dot product's inner size, a BatchNorm
         statistic's rows (training mode), a std's or a mean's elements. `n_eff(...)` takes
         them; `module_n_eff(model, rows)` counts ALL of a module's layers (each Linear's
         inner size, `rows` for each training-mode BatchNorm): an upper bound on the sums
         along the chain behind any one output;
  scale  max |ref64| over the whole tensor (or, where the reference is ~0 -- a mean of
         centred values, the gradient of a bias that BatchNorm cancels -- the magnitude of
         the summands, passed as `scale`).

Why sqrt(n_l), summed: a length-n sum in ANY order (sequential, pairwise, blocked SIMD lanes
of any width, FMA-contracted or not) has the worst-case error gamma_n * sum|terms|, gamma_n ~
n*u (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., 3.1, 4.2), and, with
rounding errors modelled as independent and mean-zero, ~lambda * sqrt(n) * u * sum|terms| with
probability >= 1 - 2n exp(-lambda^2 (1-u)^2 / 2) -- again for any order (Higham & Mary, "A New
Approach to Probabilistic Rounding Error Analysis", SIAM J. Sci. Comput. 41(5), 2019).
Pairwise sums (torch's reductions) have the smaller worst case log2(n) * u. The worst case n*u
is not usable as a tolerance here: a PointMLP stage's std sums 300k elements, and n*u of it
would pass errors of several percent, i.e. real bugs. Through a chain of layers the relative
errors add to first order (each amplified by the later layers' condition numbers, not counted:
the margin pays for them), hence the sum.

Why C = 4 (C * eps = 8u, i.e. lambda = 8 in Higham & Mary's bound: exceeded with probability <
1e-7 by a sum of up to 10^6 terms): one sqrt-n term each for the forward pass and the backward
pass (which runs the transposed sums of the same layers), the rest margin for `scale` = max
|ref64| standing in for sum|terms| and for the condition numbers. Measured on this suite's 550
comparisons (AMD EPYC, torch 2.13; ATen kernels avx512 with MKL's own choice, ATen default
with MKL/oneDNN at SSE4.2, ATen and MKL/oneDNN at AVX2): the largest error is 8.4% of its
bound, a 12x margin; three quarters below 1%. Scaling by the tensor's max, not element-wise,
keeps a tiny element of a large gradient from needing a relative tolerance of its own -- the
Xeon failure this replaces: 2.2e-4 on an element of 0.049 in a gradient whose max is 263, i.e.
7 eps * scale, where the bound (n_eff = 256) is 2050 eps * scale.

What it still catches: a wrong sign, a missing term, a wrong index changes the result by
O(scale); the bound is C * eps * n_eff of the scale: 1.2e-4 for the PointMLP stage in
training, ~1e-4 to 5e-4 for a whole network (twice that for a pair). Checked by mutating the
references of the PointMLP stage, the student's local stage and DGCNN: a flipped sign of beta
(eval mode; in training mode BatchNorm cancels it exactly, no bug to see), of the neighbour
offsets or of DGCNN's edge feature, a dropped residual `+ x`, one of k = 6 neighbour indices
shifted: each failed at 5e3 to 1e6 times the bound (DGCNN in float64: 1e10). Even a 2.6e-4
relative change (std with 1/N for 1/(N-1), N = 1920) failed, at 3x to 8x the bound.

Ill-conditioned chains: a training-mode BatchNorm over a handful of clouds with random gains
divides by a per-channel std that can be small against its inputs, amplifying every rounding
before it; there the measured errors exceed the sqrt(n) bound (float64 whole networks on 3
clouds: up to 5x it) and `worst_case=True` takes sum_l n_l instead, i.e. a condition number
of sqrt(n_l) per layer allowed on top -- in float64 still ~1e-10 of the scale.

`assert_close_pair` is for two float computations of one function where a float64 one is not
the same function or does not exist (a batch against one cloud, the C++ kernels against the
torch ops, a traced graph, ONNX Runtime; two float64 formulations): each is within the bound
of the exact result, so they are within twice it of each other (triangle inequality).

Bit-exact claims (one operation order: FPS/kNN indices, replay, augmentation bytes, the C++
kernels that mirror a torch op's arithmetic) stay `torch.equal`, not this. `make test` reruns
them under ATEN_CPU_CAPABILITY=default and avx2. Known not to hold under `default`: the C++
FPS/kNN distances equal `ops.fps_with_distances`'s only where ATen's `addcmul_` is the
vectorised, FMA-fused kernel (avx2, avx512); the scalar default kernel rounds the product
first (1-2 ulp apart; test_native_fps_knn_matches_the_torch_ops and
test_native_prefix_knn_matches_the_table_selection fail there).
"""

from __future__ import annotations

import copy
import math
import os

import numpy as np
import torch

C = 4.0
EPS = {torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7, torch.float32: 2.0**-23,
       torch.float64: 2.0**-52}


def _tensor(x) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, torch.Tensor):
        return x.detach()
    return torch.as_tensor(x, dtype=torch.float64)


def n_eff(*lengths: int, worst_case: bool = False) -> float:
    """sum_l sqrt(n_l) of the sums' lengths behind a result (>= 1: one rounding at least);
    sum_l n_l with `worst_case` (see the module docstring: ill-conditioned chains)."""
    return max(1.0, sum(n if worst_case else math.sqrt(n) for n in lengths))


def module_n_eff(module: torch.nn.Module, rows: int = 0, extra: tuple[int, ...] = (),
                 worst_case: bool = False) -> float:
    """n_eff of a module's forward: every Linear's inner size, `rows` for every BatchNorm
    when training (`rows`: the most rows any of them normalises, B*P*k), and `extra` (sums
    outside the layers: a std's, a mean's)."""
    lengths = list(extra)
    for m in module.modules():
        if isinstance(m, torch.nn.Linear):
            lengths.append(m.in_features)
        elif isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training:
            lengths.append(rows)
    return n_eff(*lengths, worst_case=worst_case)


def student_n_eff(model: torch.nn.Module, points: int, rows: int = 0) -> float:
    """`module_n_eff` of a PointStudent on clouds of `points`, with the sums outside its
    layers: each stage's 1/σ (a mean over anchors × k squared offsets, each a sum of 3) and
    the head's mean over the last stage's anchors."""
    lengths, refs = [], points
    for st in model.stages:
        m = min(st.num_anchors, refs)
        lengths += [m * min(st.k, refs), 3]
        refs = m
    return module_n_eff(model, rows, extra=(*lengths, refs))


def tolerance(reduction: float, scale: float, dtype: torch.dtype = torch.float32) -> float:
    """The bound itself, C * eps * n_eff * scale, for checks that are not a difference of
    two tensors (a nearest distance, an upper limit)."""
    return C * EPS[dtype] * reduction * scale


def _check(err: float, tol: float, msg: str, detail: str) -> None:
    report = os.environ.get("POINTKD_NUMERICS_REPORT")
    if report:  # measurement aid: one line per comparison, error as a fraction of the bound
        with open(report, "a") as f:
            f.write(f"{os.environ.get('PYTEST_CURRENT_TEST', '?').split(' ')[0]} {msg!r} "
                    f"{err / tol if tol else (0.0 if err == 0 else float('inf')):.3g}\n")
    assert err <= tol, f"{msg}: {detail}"


def assert_close_to_reference(actual, ref64, reduction: float, *, scale: float | None = None,
                              dtype: torch.dtype | None = None, msg: str = "") -> None:
    """max |actual - ref64| <= C * eps(actual's dtype) * reduction * scale.

    `actual`: a float tensor or array (its dtype sets eps unless `dtype` says otherwise, as
    for a Python float taken from a float32 tensor). `ref64`: the same function in float64.
    `reduction`: n_eff, from `n_eff`/`module_n_eff` (1: one rounding, elementwise).
    `scale`: default max |ref64|."""
    a, r = _tensor(actual), _tensor(ref64)
    dtype = dtype or a.dtype
    assert dtype in EPS, f"{msg}: not a float result ({dtype})"
    assert r.dtype == torch.float64, f"{msg}: the reference must be float64, not {r.dtype}"
    assert reduction >= 1, f"{msg}: reduction must be >= 1, got {reduction}"
    a = a.to(torch.float64)
    assert a.shape == r.shape, f"{msg}: shape {tuple(a.shape)} != {tuple(r.shape)}"
    assert torch.isfinite(a).all() and torch.isfinite(r).all(), f"{msg}: not finite"
    if scale is None:
        scale = float(r.abs().max()) if r.numel() else 0.0
    tol = C * EPS[dtype] * reduction * scale
    diff = (a - r).abs()
    err = float(diff.max()) if diff.numel() else 0.0
    _check(err, tol, msg, f"max |actual - ref64| = {err:.3g} (at flat index "
           f"{int(diff.argmax()) if diff.numel() else 0}) > C {C:g} * eps {EPS[dtype]:.3g} * "
           f"n_eff {reduction:.4g} * scale {scale:.3g} = {tol:.3g}; error = "
           f"{err / (EPS[dtype] * scale) if scale else float('inf'):.3g} eps * scale")


def assert_close_pair(a, b, reduction: float, *, scale: float | None = None,
                      msg: str = "") -> None:
    """Two float computations of one function: max |a - b| <= 2 * C * eps * reduction *
    scale, scale = max(|a|, |b|) unless given (each within the bound of the exact value)."""
    ta, tb = _tensor(a), _tensor(b)
    assert ta.dtype == tb.dtype and ta.dtype in EPS, f"{msg}: dtypes {ta.dtype}, {tb.dtype}"
    if scale is None:
        scale = max(float(ta.abs().max()), float(tb.abs().max())) if ta.numel() else 0.0
    assert_close_to_reference(ta, tb.to(torch.float64), 2 * reduction, scale=scale,
                              dtype=ta.dtype, msg=msg)


def float64_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A deep copy in float64 (parameters and buffers); the original is untouched."""
    return copy.deepcopy(module).double()
