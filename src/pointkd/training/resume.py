"""What `--resume` must find unchanged: the data, the classes, the model and its arguments,
the optimizer and the distillation mode. Each mismatch is a one-line error that says what
differs and how to go on."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from pointkd.checkpoint import check_resume_state
from pointkd.config.run import RunConfig
from pointkd.data import PointCloudSet
from pointkd.errors import ConfigError


def check_resume(state: dict, cfg: RunConfig, data: PointCloudSet, path: Path) -> None:
    """--resume continues the same run: the same model and optimizer on the same data and
    classes, in the same distillation mode; last.pt must hold everything resume reads
    (`checkpoint.check_resume_state`). Anything else is a one-line error saying what
    differs, before anything in the run directory changes."""
    check_resume_state(state, path)
    old_config = state.get("config") if isinstance(state.get("config"), dict) else {}
    old_optim = (old_config.get("optim") or {}).get("name", cfg.optim.name)
    old = (state["model"], state.get("model_kwargs", {}), state["num_classes"], old_optim)
    new = (cfg.model.name, cfg.model.kwargs, data.num_classes, cfg.optim.name)
    if old != new:
        def run(m: tuple) -> str:
            return f"model {m[0]} {m[1]}, {m[2]} classes, optimizer {m[3]}"

        raise ConfigError(f"--resume: {path} is a run of {run(old)}, not {run(new)}; "
                          f"{_START_OVER}")
    old_data = (old_config.get("data") or {}).get("path", "?")
    if state["data_fingerprint"] != data.fingerprint():
        raise ConfigError(f"--resume: {path} was trained on other data ({old_data}, "
                          f"{state['data_fingerprint'][:19]}) than this run's "
                          f"{cfg.data.path} ({data.fingerprint()[:19]}); {_START_OVER}")
    if list(state["class_names"]) != list(data.class_names):
        raise ConfigError(f"--resume: {path} was trained with other class names than "
                          f"{cfg.data.path}'s; {_START_OVER}")
    old_mode = _config_mode(old_config.get("distill") or {})
    if old_mode != cfg.distill.mode:
        raise ConfigError(f"--resume: {path} is a {old_mode} run, this one {cfg.distill.mode} "
                          f"(distillation settings differ); {_START_OVER}")


_START_OVER = "continue it as it was, or start a new run in another --out"


def _config_mode(distill: dict) -> str:
    """The distillation mode of a saved config (`DistillConfig.mode` on its dict)."""
    if distill.get("online"):
        return "online"
    return "offline" if distill.get("records") else "plain"


def _fit_problem(saved: object, live: dict[str, Tensor], what: str) -> str | None:
    """Why the saved state dict `saved` cannot load into one shaped like `live`, or None."""
    if not isinstance(saved, dict) or not all(torch.is_tensor(v) for v in saved.values()):
        return f"its {what} is not a mapping of names to tensors"
    missing = [k for k in live if k not in saved]
    extra = [k for k in saved if k not in live]
    shapes = [k for k in live if k in saved and saved[k].shape != live[k].shape]
    parts = ([f"missing {', '.join(missing[:3])}"] if missing else []) + (
        [f"unexpected {', '.join(extra[:3])}"] if extra else []) + (
        [f"other shapes for {', '.join(shapes[:3])}"] if shapes else [])
    return f"its {what} does not fit ({'; '.join(parts)})" if parts else None


def _optimizer_fit_problem(saved: dict, optimizer: torch.optim.Optimizer) -> str | None:
    """Whether the saved optimizer state (schema-checked) belongs to these parameters: the
    same groups, as many parameters in each, every buffer of its parameter's shape (a
    mismatch would load and then fail in the first step)."""
    groups = optimizer.param_groups
    if [len(g["params"]) for g in saved["param_groups"]] != [len(g["params"]) for g in groups]:
        return "its optimizer state is for other parameters (group sizes differ)"
    if not saved["state"] and any(g.get("betas") or g.get("momentum", 0) for g in groups):
        # AdamW and SGD with momentum keep a buffer per parameter from the first step on:
        # without them the run would go on from reset moments, not where it stopped
        return "its optimizer state is empty (the optimizer's moments were lost)"
    params = [p for g in groups for p in g["params"]]
    order = [i for g in saved["param_groups"] for i in g["params"]]
    for index, entry in saved["state"].items():
        param = params[order.index(index)]
        for name, value in entry.items():
            if torch.is_tensor(value) and value.ndim > 0 and value.shape != param.shape:
                return (f"its optimizer state '{name}' has shape {tuple(value.shape)} for a "
                        f"parameter of shape {tuple(param.shape)}")
    return None
