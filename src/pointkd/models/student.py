"""Compact students: a width/depth-scalable local-feature network built for accuracy per
parameter and CPU speed at 1,024 points.

Design (one class, `PointStudent`):
- a per-point embedding (Linear 3 -> w),
- S local stages; stage i keeps M_i anchor points and, for each, groups its k nearest
  neighbours (kNN in xyz), encodes [relative xyz / σ, neighbour feature, anchor xyz and
  feature] with one linear layer computed per point before grouping (see `LocalStage`),
  BN + ReLU, max-pools over the k neighbours, then a residual point-wise Linear+BN+ReLU
  (the PointNet++/PointMLP local pattern without the expensive parts),
- global max + mean pooling and a two-layer classifier.

σ is the cloud's RMS anchor-to-neighbour distance at that stage (no gradient): relative
coordinates are a few hundredths at 1,024 points and would otherwise barely register next to
O(1) features (measured: 71.8% vs 62.6% test OA after 8 short epochs on a 2,000-shape subset).

Sampling: the cloud is reordered once so that every stage's anchors are a *prefix* of the
previous stage's points. `sampler="fps"` (default) puts the farthest-point-sampling order of
the first stage's anchors first; FPS is greedy, so each prefix of it is itself an FPS sample
and one loop serves all stages. `"first"` keeps the input order: pointkd feeds clouds in random
order (ModelNet40 HDF5 points are stored shuffled, `read_cloud` shuffles), so prefixes are
uniform random subsamples, at no cost. `"fps_coarse"` takes a random first stage and FPS from
the second on (a 64-step loop instead of 256). student_s after 8 epochs on a 2,000-shape
subset, test OA: fps 78.9%, fps_coarse 76.4%, first 71.8%; training throughput (batch 32)
fps ≈ 6-10% lower than first. The FPS loop dominates batch-1 latency, though (~7 ms vs ~3 ms
for `first`, eager, this 2-core CPU) and exports to ONNX as an unrolled loop: pick `first`
(or `fps_coarse`) where latency or a small export matters more than accuracy.

Neighbourhoods (`sampler="fps"`): the FPS loop computes the distance from every sample to
every point anyway; kept as a table, it *is* the kNN table of all stages (stage 1: samples ×
all points; later stages: shorter FPS prefixes × FPS prefixes), so no stage runs its own
distance matmul, and σ comes from the neighbours' distances without a gather. With the
C++ kernels (`models/kernels/`, on by default) the loop and the stage-1 selection, the later
stages' selections (from the coordinates, with the loop's own arithmetic, so the same
distances without keeping the table), the training-mode gathered max-pool and the inference
pool run as C++ kernels with the same results.
Every matmul runs on channels-last (rows, C) matrices, which CPUs run fast and ONNX exports
as-is.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pointkd.models import ops, register_model
from pointkd.models.kernels import native
from pointkd.models.layers import SharedMLP, cat_linear
from pointkd.models.ops import (
    check_points,
    farthest_point_sample,
    fps_with_distances,
    gather_max,
    gather_points,
    knn,
    nearest,
)

__all__ = ["LocalStage", "PointStudent"]

SAMPLERS = ("fps", "first", "fps_coarse")


class LocalStage(nn.Module):
    """Group k neighbours per anchor (the first M points), encode, max-pool; then a point-wise
    residual MLP.

    The grouped layer W·[(x_j − x_i)/σ, f_j, x_i, f_i] is linear, so it equals
    A·[x_j/σ, f_j] + (B·[x_i, f_i] − A_xyz·x_i/σ): both terms are computed per point *before*
    grouping, and the B×M×k sums only meet BatchNorm, ReLU and the max — fused in training
    (`SharedMLP.pool_gathered`, no per-neighbour tensor is stored), a gathered max in eval
    (BatchNorm folded into A and B, `gather_max`)."""

    def __init__(self, c_in: int, c_out: int, num_anchors: int, k: int) -> None:
        super().__init__()
        self.num_anchors, self.k = num_anchors, k
        self.group = SharedMLP(2 * (3 + c_in), c_out, bias=False)  # [A | B]
        self.post = SharedMLP(c_out, c_out, bias=False)

    def forward(self, xyz: Tensor, feats: Tensor, hood: tuple[Tensor, Tensor] | None = None
                ) -> tuple[Tensor, Tensor]:
        """`xyz (B, N, 3)`, `feats (B, N, C)` → anchors `(B, M, 3)`, features `(B, M, C')`.

        `hood`: the anchors' k nearest points `(B, M, k)` and their squared distances, when
        the caller has them (`PointStudent` takes them from the FPS loop); else a kNN here."""
        bsz, n, c_in = feats.shape
        m = min(self.num_anchors, n)
        anchor_xyz, anchor_f = xyz[:, :m], feats[:, :m]
        if hood is None:
            nbr = knn(anchor_xyz, xyz, min(self.k, n))  # (B, M, k)
            with torch.no_grad():
                sq = (gather_points(xyz, nbr) - anchor_xyz.unsqueeze(2)).square().sum(-1)
        else:
            nbr, sq = hood
        # 1/σ per cloud (no gradient), σ² the mean squared coordinate offset to a neighbour;
        # floored so that degenerate clouds stay finite
        inv = (sq.reshape(bsz, -1).mean(-1) / 3).clamp_min(1e-4).rsqrt().view(-1, 1, 1)
        weight, bias = self.group.weight_bias()
        d = 3 + c_in
        # one matmul per term (a 3-wide matmul costs about as much as a 64-wide one)
        # cat_linear: the coordinate columns get no input gradient (cheaper backward)
        table = cat_linear([xyz * inv, feats], weight[:, :d])  # (B, N, C')
        w_centre = torch.cat([weight[:, d:], -weight[:, :3]], dim=1)
        centre = cat_linear([anchor_xyz, anchor_f, anchor_xyz * inv], w_centre, bias)  # (B, M, C')
        if self.group.folded() and _native_pool(table, centre):
            pooled = native.gather_max(table, nbr, centre, self.group.slope)
        elif self.group.folded():
            pooled = self.group.activate(gather_max(table, nbr) + centre)
        else:
            c = table.shape[-1]
            flat = nbr + torch.arange(bsz, device=nbr.device).view(-1, 1, 1) * n
            pooled = self.group.pool_gathered(table.reshape(bsz * n, c), flat.view(bsz * m, -1),
                                              centre.reshape(bsz * m, c)).view(bsz, m, c)
        return anchor_xyz, pooled + self.post(pooled)


def _native_pool(table: Tensor, centre: Tensor) -> bool:
    """Whether the inference pool can run as the C++ kernel: float32 on CPU, not exporting,
    and no gradient wanted (the kernel has no backward; eval-mode gradients, e.g. for
    saliency, take the PyTorch ops)."""
    wants_grad = torch.is_grad_enabled() and (table.requires_grad or centre.requires_grad)
    return (table.dtype == centre.dtype == torch.float32 and table.is_cpu and not wants_grad
            and not ops._tracing() and native.available())


def fps_first(points: Tensor, m: int) -> Tensor:
    """`points` reordered so that their FPS sample of size m comes first, in FPS order."""
    return _put_first(points, farthest_point_sample(points, m))[0]


def _put_first(points: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    """`points` with `idx (B, m)` first (in that order), then the rest in input order; and the
    new position of every input point `(B, N)`."""
    bsz, n, _ = points.shape
    m = idx.shape[1]
    # rank: FPS position for the sampled points, m + original index for the rest
    rank = torch.arange(m, m + n, device=points.device).expand(bsz, n).clone()
    rank.scatter_(1, idx, torch.arange(m, device=points.device).expand(bsz, m))
    order = rank.argsort(dim=1)
    position = torch.empty_like(order).scatter_(
        1, order, torch.arange(n, device=points.device).expand(bsz, n))
    return torch.gather(points, 1, order.unsqueeze(-1).expand(-1, -1, 3)), position


class PointStudent(nn.Module):
    def __init__(self, num_classes: int, embed: int = 32, dims: tuple[int, ...] = (64, 128),
                 anchors: tuple[int, ...] = (256, 64), k: int = 16, head: int = 128,
                 dropout: float = 0.5, sampler: str = "fps") -> None:
        super().__init__()
        if len(dims) != len(anchors):
            raise TypeError("dims and anchors must have the same length")
        if sampler not in SAMPLERS:
            raise TypeError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        self.sampler, self.anchors = sampler, anchors
        self.embed = SharedMLP(3, embed, bias=False)
        chans = [embed, *dims]
        self.stages = nn.ModuleList(
            LocalStage(chans[i], chans[i + 1], anchors[i], k) for i in range(len(dims)))
        self.head = nn.Sequential(
            SharedMLP(2 * dims[-1], head, bias=False), nn.Dropout(dropout),
            nn.Linear(head, num_classes))

    def _fps_neighbourhoods(self, points: Tensor) -> tuple[Tensor, list]:
        """The cloud with its FPS sample first, and every stage's neighbourhood.

        The FPS loop computes the distance from each sample to every point; kept, they are
        the kNN table of stage 1 (anchors: the samples; points: all), and, restricted to
        shorter FPS prefixes, of every later stage (anchors and points are both prefixes of
        the sample). So no stage builds another distance table, and the distances come
        exact, (x − y)² summed, as FPS has them."""
        bsz, n, _ = points.shape
        m0, k0 = min(self.anchors[0], n), min(self.stages[0].k, n)
        use_native = native.available() and points.is_cpu
        if use_native:  # later stages' distances come from the coordinates, not a table
            idx, nbr0, sq0, _ = native.fps_knn(points, m0, k0, 0)
            xyz = points
        else:
            idx, table = fps_with_distances(points, m0)
            nbr0, sq0 = nearest(table, k0)
        points, position = _put_first(points, idx)
        hoods, refs = [], n
        for i, stage in enumerate(self.stages):
            m, k = min(stage.num_anchors, refs), min(stage.k, refs)
            if i == 0:  # columns are input points: renumber them to their new positions
                nbr, sq = position.gather(1, nbr0.view(bsz, -1)).view(bsz, m, k), sq0
            elif use_native:  # the same selection in one C++ pass
                nbr, sq = native.prefix_knn(xyz, idx, m, refs, k)
            else:  # columns of the first `refs` samples, which are this stage's points
                cols = idx[:, None, :refs].expand(-1, m, -1)
                nbr, sq = nearest(table[:, :m].gather(2, cols), k)
            hoods.append((nbr, sq))
            refs = m
        return points, hoods

    def forward(self, points: Tensor) -> Tensor:
        """`(B, P, 3)` → logits `(B, num_classes)`."""
        check_points(points)
        n = points.shape[1]
        hoods: list = [None] * len(self.stages)
        if self.sampler == "fps" and n > 1 and ops._tracing():
            # export: FPS, then a kNN per stage, as before; a table built from unrolled FPS
            # steps made ONNX Runtime ~20% slower (measured)
            points = fps_first(points, min(self.anchors[0], n))
        elif self.sampler == "fps" and n > 1:
            points, hoods = self._fps_neighbourhoods(points)
        elif self.sampler == "fps_coarse" and len(self.anchors) > 1 and n > 1:
            m0 = min(self.anchors[0], n)
            head = fps_first(points[:, :m0], min(self.anchors[1], m0))
            points = torch.cat([head, points[:, m0:]], dim=1)
        xyz, feats = points, self.embed(points)
        for stage, hood in zip(self.stages, hoods, strict=True):
            xyz, feats = stage(xyz, feats, hood)
        pooled = torch.cat([feats.amax(dim=1), feats.mean(dim=1)], dim=-1)
        return self.head(pooled)


@register_model
def student_xs(num_classes: int, **kw) -> nn.Module:
    """~0.1M parameters."""
    return PointStudent(num_classes, **{"embed": 32, "dims": (64, 160), "head": 128, **kw})


@register_model
def student_s(num_classes: int, **kw) -> nn.Module:
    """≤0.3M parameters (0.298M at 40 classes): the CPU-protocol student budget."""
    return PointStudent(num_classes, **{"embed": 48, "dims": (96, 160, 240),
                                        "anchors": (256, 64, 16), "head": 160, **kw})


@register_model
def student_m(num_classes: int, **kw) -> nn.Module:
    """~0.5M parameters."""
    return PointStudent(num_classes, **{"embed": 64, "dims": (96, 192, 320),
                                        "anchors": (256, 64, 16), "head": 256, **kw})


@register_model
def student_l(num_classes: int, **kw) -> nn.Module:
    """~1M parameters: the CPU teacher candidate of the family."""
    return PointStudent(num_classes, **{"embed": 64, "dims": (128, 256, 512),
                                        "anchors": (256, 64, 16), "head": 256, **kw})
