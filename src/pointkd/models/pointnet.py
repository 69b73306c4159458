"""PointNet (Qi et al., CVPR 2017) classification networks.

`pointnet`: the "vanilla" network of the paper (pointnet_cls_basic in the authors' code):
per-point MLP 64-64-64-128-1024, global max pool, FC 512-256-C. 0.82M parameters at 40 classes.

`pointnet_tnet`: the full network: input 3×3 T-Net, MLP 64-64, feature 64×64 T-Net, MLP
64-128-1024, max pool, FC 512-256-C. 3.48M parameters at 40 classes (published: 3.5M).
The authors' training adds 0.001·‖I − AAᵀ‖² for the feature transform A; the model keeps the
term of its last forward pass in `aux_loss()` for training loops that want it.

Both use BatchNorm after every layer but the last and dropout p=0.3 (keep 0.7) before the
last FC. Per-point layers run as channels-last matmuls (`SharedMLP`), see ops.py.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pointkd.models import register_model
from pointkd.models.layers import SharedMLP, chain_max
from pointkd.models.ops import check_points

__all__ = ["PointNet", "pointnet", "pointnet_tnet"]


def _chain(widths: list[int]) -> nn.Sequential:
    return nn.Sequential(*(SharedMLP(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)))


def _encode(mlp: nn.Sequential, x: Tensor) -> Tensor:
    """Per-point MLP then global max pool: `(B, P, C)` → `(B, C_last)`."""
    return chain_max(list(mlp), x)


class Head(nn.Sequential):
    """FC 512-256-C classifier with BatchNorm, ReLU and dropout before the last FC."""

    def __init__(self, c_in: int, num_classes: int, dropout: float) -> None:
        super().__init__(
            SharedMLP(c_in, 512), SharedMLP(512, 256), nn.Dropout(dropout),
            nn.Linear(256, num_classes),
        )


class TNet(nn.Module):
    """Predicts a k×k transform from the cloud; starts as the identity (zero last layer)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k
        self.mlp = _chain([k, 64, 128, 1024])
        self.fc = nn.Sequential(SharedMLP(1024, 512), SharedMLP(512, 256))
        self.out = nn.Linear(256, k * k)
        nn.init.zeros_(self.out.weight)
        with torch.no_grad():
            self.out.bias.copy_(torch.eye(k).flatten())

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.fc(_encode(self.mlp, x))).view(-1, self.k, self.k)


class PointNet(nn.Module):
    def __init__(self, num_classes: int, tnets: bool, dropout: float = 0.3) -> None:
        super().__init__()
        self.input_tnet = TNet(3) if tnets else None
        self.mlp1 = _chain([3, 64, 64])
        self.feature_tnet = TNet(64) if tnets else None
        self.mlp2 = _chain([64, 64, 128, 1024])
        self.head = Head(1024, num_classes, dropout)
        self._transform: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        """`(B, P, 3)` → logits `(B, num_classes)`."""
        check_points(x)
        if self.input_tnet is not None:
            x = torch.bmm(x, self.input_tnet(x))
        h = self.mlp1(x)
        if self.feature_tnet is not None:
            self._transform = self.feature_tnet(h)
            h = torch.bmm(h, self._transform)
        return self.head(_encode(self.mlp2, h))

    def aux_loss(self) -> Tensor:
        """0.001·‖I − AAᵀ‖² (batch mean) of the last feature transform A; 0 without T-Nets."""
        a = self._transform
        if a is None:
            return torch.zeros(())
        eye = torch.eye(a.shape[1], device=a.device, dtype=a.dtype)
        return 1e-3 * (eye - a @ a.transpose(1, 2)).pow(2).sum((1, 2)).mean()


@register_model
def pointnet(num_classes: int, dropout: float = 0.3) -> nn.Module:
    """PointNet without T-Nets (paper's vanilla variant), 0.82M params at 40 classes."""
    return PointNet(num_classes, tnets=False, dropout=dropout)


@register_model
def pointnet_tnet(num_classes: int, dropout: float = 0.3) -> nn.Module:
    """PointNet with input and feature T-Nets, 3.48M params at 40 classes (published 3.5M)."""
    return PointNet(num_classes, tnets=True, dropout=dropout)
