"""Compact students: a width/depth-scalable local-feature network built for accuracy per
parameter and CPU speed at 1,024 points.

Design (one class, `PointStudent`):
- a per-point embedding (Linear 3 -> w),
- S local stages; stage i keeps M_i anchor points and, for each, groups its k nearest
  neighbours (kNN in xyz), encodes [neighbour xyz - anchor xyz, neighbour feature - anchor
  feature, anchor feature] with a linear layer computed per point before grouping (see
  `LocalStage`), BN + ReLU, max-pools over the k neighbours, then a residual point-wise
  Linear+BN+ReLU (the PointNet++/PointMLP local pattern without the expensive parts),
- global max + mean pooling and a two-layer classifier.

Anchors are the *first* M_i points (`sampler="first"`): pointkd feeds clouds in random order
(ModelNet40 HDF5 points are stored shuffled, the augmentation shuffles, `read_cloud` returns
a random permutation), so the first M points are a uniform random subsample, at no cost.
Farthest-point sampling (`sampler="fps"`) covers the shape more evenly but is a sequential
loop that costs more than the rest of a small student's forward on CPU; it stays available.
Linear layers on (B, M, k, C) tensors are plain matmuls, which CPUs run fast and ONNX
exports as-is.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pointkd.models import ops, register_model


def _mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c_in, c_out in zip(dims[:-1], dims[1:], strict=True):
        layers += [nn.Linear(c_in, c_out, bias=False), _ChannelsLastBN(c_out), nn.ReLU(True)]
    return nn.Sequential(*layers)


class _ChannelsLastBN(nn.BatchNorm1d):
    """BatchNorm over the last dimension of a (..., C) tensor."""

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        return super().forward(x.reshape(-1, shape[-1])).view(shape)


class LocalStage(nn.Module):
    """Group k neighbours per anchor, encode, max-pool; then a point-wise residual MLP.

    The grouped layer W·[x_j − x_i, f_j − f_i, f_i] is linear, so it equals
    A·[x_j, f_j] + B·[x_i, f_i]: both products are computed per point *before* grouping,
    and the B×M×k tensor only sees a gather, an add, BN, ReLU and the max — no matmul."""

    def __init__(self, c_in: int, c_out: int, num_anchors: int, k: int, sampler: str):
        super().__init__()
        self.num_anchors, self.k, self.sampler = num_anchors, k, sampler
        self.neighbour = nn.Linear(3 + c_in, c_out, bias=False)  # A
        self.anchor = nn.Linear(3 + c_in, c_out, bias=False)  # B (anchor terms merged)
        self.bn = _ChannelsLastBN(c_out)
        self.post = _mlp([c_out, c_out])

    def forward(self, xyz: Tensor, feats: Tensor) -> tuple[Tensor, Tensor]:
        m = min(self.num_anchors, xyz.shape[1])
        if self.sampler == "fps" and m < xyz.shape[1]:
            idx = ops.farthest_point_sample(xyz, m)
            anchor_xyz, anchor_f = ops.gather_points(xyz, idx), ops.gather_points(feats, idx)
        else:
            anchor_xyz, anchor_f = xyz[:, :m], feats[:, :m]
        nbr = ops.knn(anchor_xyz, xyz, min(self.k, xyz.shape[1]))  # (B, M, k)
        per_point = self.neighbour(torch.cat([xyz, feats], dim=-1))  # (B, N, C)
        per_anchor = self.anchor(torch.cat([anchor_xyz, anchor_f], dim=-1))  # (B, M, C)
        grouped = ops.gather_points(per_point, nbr) + per_anchor.unsqueeze(2)
        pooled = torch.relu(self.bn(grouped)).amax(dim=2)
        return anchor_xyz, pooled + self.post(pooled)


class PointStudent(nn.Module):
    def __init__(self, num_classes: int, embed: int = 32, dims: tuple[int, ...] = (64, 128),
                 anchors: tuple[int, ...] = (256, 64), k: int = 16, head: int = 128,
                 dropout: float = 0.5, sampler: str = "first"):
        super().__init__()
        if len(dims) != len(anchors):
            raise TypeError("dims and anchors must have the same length")
        if sampler not in ("first", "fps"):
            raise TypeError(f"sampler must be 'first' or 'fps', got {sampler!r}")
        self.embed = _mlp([3, embed])
        chans = [embed, *dims]
        self.stages = nn.ModuleList(
            LocalStage(chans[i], chans[i + 1], anchors[i], k, sampler) for i in range(len(dims)))
        self.head = nn.Sequential(
            nn.Linear(2 * dims[-1], head, bias=False), nn.BatchNorm1d(head), nn.ReLU(True),
            nn.Dropout(dropout), nn.Linear(head, num_classes))

    def forward(self, points: Tensor) -> Tensor:
        xyz, feats = points, self.embed(points)
        for stage in self.stages:
            xyz, feats = stage(xyz, feats)
        pooled = torch.cat([feats.amax(dim=1), feats.mean(dim=1)], dim=-1)
        return self.head(pooled)


@register_model
def student_xs(num_classes: int, **kw) -> nn.Module:
    """~0.1M parameters."""
    return PointStudent(num_classes, **{"embed": 32, "dims": (64, 160), "head": 128, **kw})


@register_model
def student_s(num_classes: int, **kw) -> nn.Module:
    """~0.3M parameters."""
    return PointStudent(num_classes, **{"embed": 48, "dims": (96, 160, 240),
                                        "anchors": (256, 64, 16), "head": 192, **kw})


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
