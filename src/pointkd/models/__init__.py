"""Model registry, timm-style: `create_model(name, num_classes, **kw)`.

Every model maps a batch of clouds `(B, P, 3)` float32 to logits `(B, num_classes)`.
One file per family registers its constructors with `@register_model`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from torch import nn

from pointkd.errors import ModelError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_FAMILIES = ("pointnet", "pointnet2", "dgcnn", "pointmlp", "student")


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register a constructor `fn(num_classes, **kw) -> nn.Module` under its name."""
    if fn.__name__ in _REGISTRY:
        raise ValueError(f"model {fn.__name__!r} registered twice")
    _REGISTRY[fn.__name__] = fn
    return fn


def _load_families() -> None:
    # Imported on first use, not at the top: each family imports `register_model` from this
    # package. Every family exists, so any import error (a typo included) propagates.
    for family in _FAMILIES:
        importlib.import_module(f"pointkd.models.{family}")


def list_models() -> list[str]:
    _load_families()
    return sorted(_REGISTRY)


def create_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build a registered model; unknown names and bad arguments are `ModelError`s."""
    _load_families()
    if name not in _REGISTRY:
        raise ModelError(f"unknown model '{name}' (known: {', '.join(sorted(_REGISTRY))})")
    if num_classes < 2:
        raise ModelError(f"num_classes must be >= 2, got {num_classes}")
    try:
        return _REGISTRY[name](num_classes=num_classes, **kwargs)
    except TypeError as exc:
        raise ModelError(f"bad arguments for model '{name}': {exc}") from None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
