"""What `--resume` must find unchanged: the data, the classes, the model and its arguments,
the optimizer, the distillation mode and what makes its target (teachers,
votes, alpha, beta, tau, ...). Each mismatch is a one-line error that says what
differs and how to go on."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from pointkd.checkpoint import check_resume_state
from pointkd.config.merge import to_dict
from pointkd.config.run import DistillConfig, RunConfig
from pointkd.data import PointCloudSet
from pointkd.errors import ConfigError


def check_resume(state: dict, cfg: RunConfig, data: PointCloudSet, path: Path) -> None:
    """--resume continues the same run: the same model and optimizer on the same data and
    classes, in the same distillation mode towards the same target; last.pt must hold
    everything resume reads (`checkpoint.check_resume_state`). Anything else is a one-line
    error saying what differs, before anything in the run directory changes."""
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
    old_distill = old_config.get("distill") or {}
    old_mode = _config_mode(old_distill)
    if old_mode != cfg.distill.mode:
        raise ConfigError(f"--resume: {path} is a {old_mode} run, this one {cfg.distill.mode} "
                          f"(distillation settings differ); {_START_OVER}")
    old_target, new_target = _target_settings(old_distill), _target_settings(to_dict(cfg.distill))
    changed = [f"{key} {old_target[key]!r}, now {new_target[key]!r}"
               for key in new_target if old_target[key] != new_target[key]]
    if changed and cfg.distill.mode != "plain":  # without a teacher they make no target
        raise ConfigError(f"--resume: {path} was trained with other distillation settings "
                          f"({'; '.join(changed)}); {_START_OVER}")


_START_OVER = "continue it as it was, or start a new run in another --out"


# what makes the training target: changing one mid-run would train the rest of the epochs
# towards another objective than the run's metrics and config.yaml say
_TARGET_KEYS = ("alpha", "beta", "tau", "nwsd_warmup_epochs", "self_target", "ema_decay",
                "rows_per_epoch", "use_k", "teacher_votes")


def _target_settings(distill: dict) -> dict:
    """The settings of a (saved or live) distill section that define the target, with
    DistillConfig's defaults for keys an older config lacks. Teachers are compared by file
    name, in order: a run moved to another directory (or resumed from another working
    directory) reads the same teachers through other paths."""
    defaults = to_dict(DistillConfig())
    settings = {key: distill.get(key, defaults[key]) for key in _TARGET_KEYS}
    teachers = [distill.get("teacher") or "", *(distill.get("extra_teachers") or [])]
    settings["teachers"] = [Path(t).name for t in teachers if t]
    settings["record sets"] = len([r for r in [distill.get("records") or "",
                                               *(distill.get("extra_records") or [])] if r])
    return settings


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
