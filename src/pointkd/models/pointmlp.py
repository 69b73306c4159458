"""PointMLP (Ma et al., ICLR 2022): a residual point-MLP classifier with geometric affine
grouping.

Embedding (point-wise 3 → E) then four stages; each stage samples anchors by FPS (512, 256,
128, 64 points), groups each anchor's k = 24 nearest neighbours (kNN in xyz) and normalises
them with the *geometric affine module*: φ = α ⊙ (f_j − f_i) / (σ + ε) + β, with σ the
standard deviation of all f_j − f_i of the cloud (one scalar per cloud) and α, β learnable per
channel; [φ, f_i] then goes through a transfer layer (2C → C·dim_expansion), the
pre-extraction residual blocks, a max over the neighbours and the post-extraction residual
blocks. Global max pool, classifier 512-256-C (BatchNorm, ReLU, dropout 0.5).

- `pointmlp`: E = 64, widths 128/256/512/1024, blocks [2,2,2,2] pre and post,
  bottleneck 1.0 — 13.24M parameters at 40 classes (published 13.2M).
- `pointmlp_elite`: E = 32, dim_expansion [2,2,2,1] (widths 64/128/256/256), blocks
  [1,1,2,1] pre and post, bottleneck 0.25 — 0.68M parameters (published 0.68M).

Settings follow the authors' reference configuration (groups 1, no bias in the point-wise
layers, `normalize="anchor"`, no xyz in the grouped features). Speed without changing the
function: the transfer layer is linear in [φ, f_i], so its anchor half is applied once per
anchor (B·M rows) instead of once per neighbour (B·M·k rows), α and β are folded into its
weight, and no concatenated / repeated tensor is built. In eval mode the grouped chain runs on
cache-sized blocks of anchors (`map_chunks`) with BatchNorm folded into the Linear layers.

Clouds smaller than a stage's anchor count or k are allowed: the stage then takes min(M, P)
anchors and min(k, P) neighbours, so any P ≥ 2 works (σ needs two values).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointkd.models import register_model
from pointkd.models.layers import SharedMLP, cloud_std, map_chunks, max_k
from pointkd.models.ops import check_points, farthest_point_sample, gather_points, knn

__all__ = ["PointMLP", "pointmlp", "pointmlp_elite"]


class ResidualBlock(nn.Module):
    """ReLU(BN(W2·ReLU(BN(W1·x))) + x) on the last dim — the reference ConvBNReLURes1D."""

    def __init__(self, channels: int, expansion: float) -> None:
        super().__init__()
        hidden = int(channels * expansion)
        self.net1 = SharedMLP(channels, hidden, bias=False)
        self.net2 = SharedMLP(hidden, channels, bias=False)  # its ReLU comes after the add

    def forward(self, x: Tensor) -> Tensor:
        y = F.linear(self.net1(x), *self.net2.weight_bias())
        if not self.net2.folded():
            y = self.net2.bn(y.reshape(-1, y.shape[-1])).view(y.shape)
        return (y + x).relu_()


class Stage(nn.Module):
    """Local grouper (FPS + kNN + geometric affine), pre-extraction, max over k, post."""

    def __init__(self, c_in: int, c_out: int, anchors: int, k: int, pre: int, post: int,
                 expansion: float, eps: float = 1e-5) -> None:
        super().__init__()
        self.anchors, self.k, self.eps = anchors, k, eps
        self.alpha = nn.Parameter(torch.ones(c_in))
        self.beta = nn.Parameter(torch.zeros(c_in))
        self.transfer = SharedMLP(2 * c_in, c_out, bias=False)
        self.pre = nn.Sequential(*(ResidualBlock(c_out, expansion) for _ in range(pre)))
        self.post = nn.Sequential(*(ResidualBlock(c_out, expansion) for _ in range(post)))

    def forward(self, xyz: Tensor, feats: Tensor) -> tuple[Tensor, Tensor]:
        """`xyz (B, N, 3)`, `feats (B, N, C)` → anchors `(B, M, 3)`, features `(B, M, C')`."""
        bsz, n, c = feats.shape
        m, k = min(self.anchors, n), min(self.k, n)
        idx = farthest_point_sample(xyz, m)
        new_xyz, anchor = gather_points(xyz, idx), gather_points(feats, idx)
        diff = gather_points(feats, knn(new_xyz, xyz, k)) - anchor.unsqueeze(2)  # (B, M, k, C)
        # σ: one (unbiased) std per cloud over all groups and channels, as in the reference
        scale = 1.0 / (cloud_std(diff.reshape(bsz, -1)) + self.eps)
        # W·[α⊙d·s + β, f_i] = (W_d·diag(α))·(d·s) + (W_a·f_i + W_d·β + b)   (module docstring)
        weight, bias = self.transfer.weight_bias()
        w_diff, w_anchor = weight[:, :c] * self.alpha, weight[:, c:]
        shift = F.linear(anchor, w_anchor, bias) + weight[:, :c] @ self.beta  # (B, M, C')
        diff = diff * scale.view(bsz, 1, 1, 1)

        def grouped(s: slice) -> Tensor:
            z = F.linear(diff[s], w_diff) + shift[s].unsqueeze(-2)
            return max_k(self.pre(self.transfer.finish(z)))

        if self.training:
            out = grouped(slice(None))
        else:  # blocks of anchors, so the (·, k, C') activations stay in cache
            diff, shift = diff.reshape(bsz * m, k, c), shift.reshape(bsz * m, -1)
            out = map_chunks(grouped, bsz * m, k * self.transfer.fc.out_features, xyz.device)
        return new_xyz, self.post(out.view(bsz, m, -1))


class PointMLP(nn.Module):
    def __init__(
        self,
        num_classes: int,
        embed: int = 64,
        dim_expansion: tuple[int, ...] = (2, 2, 2, 2),
        pre_blocks: tuple[int, ...] = (2, 2, 2, 2),
        post_blocks: tuple[int, ...] = (2, 2, 2, 2),
        anchors: tuple[int, ...] = (512, 256, 128, 64),
        k: int = 24,
        expansion: float = 1.0,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if not len(dim_expansion) == len(pre_blocks) == len(post_blocks) == len(anchors):
            raise TypeError("dim_expansion, pre_blocks, post_blocks and anchors differ in length")
        self.embed = SharedMLP(3, embed, bias=False)
        stages, c = [], embed
        for mult, pre, post, m in zip(dim_expansion, pre_blocks, post_blocks, anchors,
                                      strict=True):
            stages.append(Stage(c, c * mult, m, k, pre, post, expansion))
            c *= mult
        self.stages = nn.ModuleList(stages)
        self.head = nn.Sequential(
            SharedMLP(c, 512), nn.Dropout(dropout),
            SharedMLP(512, 256), nn.Dropout(dropout),
            nn.Linear(256, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        """`(B, P, 3)` → logits `(B, num_classes)`."""
        check_points(x)
        xyz, feats = x, self.embed(x)
        for stage in self.stages:
            xyz, feats = stage(xyz, feats)
        return self.head(feats.amax(1))


@register_model
def pointmlp(num_classes: int, **kw) -> nn.Module:
    """PointMLP, 13.24M params at 40 classes (published 13.2M)."""
    return PointMLP(num_classes, **kw)


@register_model
def pointmlp_elite(num_classes: int, **kw) -> nn.Module:
    """PointMLP-elite, 0.68M params at 40 classes (published 0.68M)."""
    cfg = {"embed": 32, "dim_expansion": (2, 2, 2, 1), "pre_blocks": (1, 1, 2, 1),
           "post_blocks": (1, 1, 2, 1), "expansion": 0.25}
    return PointMLP(num_classes, **{**cfg, **kw})
