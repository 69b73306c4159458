"""Optional C++ kernel for the students' sampling and stage-1 neighbour search.

`fps_knn` runs farthest-point sampling and, inside the same loop, keeps each sample's k
nearest points and the first rows of the distance table — what `ops.fps_with_distances` +
`ops.nearest` compute with one PyTorch op per step, in one pass per sample. The results are
the same: distances are summed in the same order, without fused multiply-adds
(`-ffp-contract=off`), so the samples are identical and the neighbours are the same set
(among points at exactly the k-th distance it keeps the lowest indices; topk keeps any).

Off unless `POINTKD_NATIVE_OPS=1`: it is compiled with the system C++ compiler on first use
(torch.utils.cpp_extension, cached under ~/.cache/torch_extensions; tens of seconds once).
If that fails, a warning says why and the PyTorch ops are used.
"""

from __future__ import annotations

import os
import warnings

from torch import Tensor

from pointkd.models.ops import _timed

__all__ = ["available", "fps_knn"]

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <limits>
#include <vector>

// Per cloud: FPS from point 0 (ties: lowest index), the k nearest points of every sample
// (insertion into a sorted list; ties: lowest index), and the first `rows` distance rows.
std::vector<torch::Tensor> fps_knn(torch::Tensor xyz, int64_t m, int64_t k, int64_t rows) {
  TORCH_CHECK(xyz.dim() == 3 && xyz.size(2) == 3 && xyz.scalar_type() == torch::kFloat,
              "fps_knn: expected float (B, N, 3)");
  auto pts = xyz.contiguous();
  const int64_t B = pts.size(0), N = pts.size(1);
  TORCH_CHECK(0 < m && m <= N && 0 < k && k <= N && 0 <= rows && rows <= m, "fps_knn: sizes");
  auto idx = torch::empty({B, m}, torch::kLong);
  auto nbr = torch::empty({B, m, k}, torch::kLong);
  auto sq = torch::empty({B, m, k}, torch::kFloat);
  auto table = torch::empty({B, rows, N}, torch::kFloat);
  const float* P = pts.data_ptr<float>();
  int64_t* I = idx.data_ptr<int64_t>();
  int64_t* NB = nbr.data_ptr<int64_t>();
  float* SQ = sq.data_ptr<float>();
  float* T = table.data_ptr<float>();
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    std::vector<float> x(N), y(N), z(N), mind(N), d(N), bd(k);
    std::vector<int64_t> bj(k);
    for (int64_t b = b0; b < b1; ++b) {
      const float* p = P + b * N * 3;
      for (int64_t j = 0; j < N; ++j) {
        x[j] = p[3 * j]; y[j] = p[3 * j + 1]; z[j] = p[3 * j + 2];
        mind[j] = std::numeric_limits<float>::infinity();
      }
      int64_t far = 0;
      for (int64_t i = 0; i < m; ++i) {
        I[b * m + i] = far;
        const float cx = x[far], cy = y[far], cz = z[far];
        for (int64_t j = 0; j < N; ++j) {
          float t = x[j] - cx;
          float e = t * t;
          t = y[j] - cy;
          e = std::fma(t, t, e);  // as torch's vectorised addcmul_: one rounding
          t = z[j] - cz;
          d[j] = std::fma(t, t, e);
        }
        float best = -std::numeric_limits<float>::infinity();
        int64_t next = 0;
        for (int64_t j = 0; j < N; ++j) {
          const float v = mind[j] < d[j] ? mind[j] : d[j];
          mind[j] = v;
          if (v > best) { best = v; next = j; }
        }
        if (i < rows) std::copy(d.begin(), d.end(), T + (b * rows + i) * N);
        int64_t filled = 0;
        for (int64_t j = 0; j < N; ++j) {
          const float v = d[j];
          if (filled == k && !(v < bd[k - 1])) continue;
          int64_t pos = filled < k ? filled++ : k - 1;
          while (pos > 0 && v < bd[pos - 1]) {
            bd[pos] = bd[pos - 1];
            bj[pos] = bj[pos - 1];
            --pos;
          }
          bd[pos] = v; bj[pos] = j;
        }
        for (int64_t q = 0; q < k; ++q) {
          NB[(b * m + i) * k + q] = bj[q];
          SQ[(b * m + i) * k + q] = bd[q];
        }
        far = next;
      }
    }
  });
  return {idx, nbr, sq, table};
}
"""

_module = None
_failed = False


def available() -> bool:
    """Whether the kernel is enabled (POINTKD_NATIVE_OPS=1) and built; builds it once."""
    global _module, _failed
    if os.environ.get("POINTKD_NATIVE_OPS", "0") != "1" or _failed:
        return False
    if _module is not None:
        return True
    try:
        from torch.utils.cpp_extension import load_inline

        _module = load_inline(
            name="pointkd_native_v2", cpp_sources=[_SOURCE], functions=["fps_knn"],
            extra_cflags=["-O3", "-march=native", "-ffp-contract=off", "-fopenmp"],
            extra_ldflags=["-fopenmp"], verbose=False)
    except Exception as exc:  # no compiler, no headers: the PyTorch ops do the same work
        _failed = True
        warnings.warn(f"pointkd: native ops unavailable ({type(exc).__name__}: {exc}); "
                      "using the PyTorch ops", stacklevel=2)
        return False
    return True


@_timed
def fps_knn(xyz: Tensor, m: int, k: int, rows: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """FPS indices `(B, m)`, each sample's k nearest points `(B, m, k)` and their squared
    distances, and the distance rows of the first `rows` samples `(B, rows, N)`."""
    idx, nbr, sq, table = _module.fps_knn(xyz.detach().float().contiguous(), m, k, rows)
    return idx, nbr, sq.to(xyz.dtype), table.to(xyz.dtype)
