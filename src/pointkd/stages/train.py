"""The `train` stage: train a model, or distill a student (`pointkd train`, `pointkd distill`).

`run(cfg)` checks the config (also one built in code), finds the dataset (offline KD: the one
the records were made for), trains with the one loop (`pointkd.training.loop.fit`), tests the
best checkpoint with the `evaluate` stage and writes `results.json`. The config, `RunConfig`,
is declared in `pointkd.config.run` (the loop reads it too).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pointkd import rundir, safe_io
from pointkd.config.merge import validate
from pointkd.config.run import RunConfig
from pointkd.errors import ConfigError, DataError

if TYPE_CHECKING:
    from pointkd.training.loop import Fitted

__all__ = ["RunConfig", "TrainResult", "run", "check", "data_source"]


class TrainResult(dict):
    """What a finished run reports (also its results.json): model, params, flops, best epoch,
    val/test OA and mAcc, times, mode. A dict, so `result["test_oa"]` reads as before."""

    def __init__(self, values: dict, out: str) -> None:
        super().__init__(values)
        self.out = out

    def text(self) -> str:
        """The one line a finished run ends with (printed by the CLI whatever
        train.progress)."""
        val = (f"best val OA {100 * self['val_oa']:.2f}% (epoch {self['best_epoch']})"
               if self.get("val_oa") is not None else f"last epoch {self['best_epoch']}")
        test = (f", test OA {100 * self['test_oa']:.2f}% mAcc {100 * self['test_macc']:.2f}%"
                if "test_oa" in self else "")
        return f"done: {val}{test} -> {self.out}"


def data_source(cfg: RunConfig) -> str | None:
    """Fill in the dataset of an offline-KD run that names none: the one its records were
    made for (their fingerprint is checked when they open). Returns where it came from, or
    None when the config named the data."""
    if cfg.data.path or cfg.distill.mode != "offline":
        return None
    from pointkd.records.manifest import read_manifest

    recorded = read_manifest(cfg.distill.records)["data"]["path"]
    if not recorded.startswith("synthetic") and not Path(recorded).exists():
        raise ConfigError(f"the records were made for the dataset at {recorded}, which is not "
                          "there from here: pass --data PATH")
    cfg.data.path = recorded
    return f"recorded in {cfg.distill.records}/manifest.json"


def check(cfg: RunConfig) -> None:
    """A run needs valid settings (`config.merge.validate`, also for a RunConfig built in
    code: ranges, choices, the distillation mode and its inputs) and a dataset."""
    validate(cfg)
    data_source(cfg)
    if not cfg.data.path:
        raise ConfigError("no dataset given: pass --data PATH (an HDF5 folder, a class-folder "
                          "dataset, or 'synthetic'), or set data.path in the config")


@rundir.releases_locks
def run(cfg: RunConfig, resume: bool = False, overwrite: bool = False,
        on_epoch: Callable[[dict], None] | None = None) -> TrainResult | None:
    """Train `cfg.model` as configured; returns the results (also results.json), or None in
    the non-zero ranks of a torchrun job. `on_epoch(row)` is called with each epoch's metrics
    once they are saved (in rank 0)."""
    from pointkd.training.loop import fit

    check(cfg)
    fitted = fit(cfg, resume=resume, overwrite=overwrite, on_epoch=on_epoch)
    return fitted.dist.on_main(_test_and_save, cfg, Path(cfg.out), fitted)


def _test_and_save(cfg: RunConfig, out: Path, fitted: Fitted) -> TrainResult:
    """Evaluate the best checkpoint on the test split (reporting only: the `evaluate` stage)
    and write results.json.

    Training time counts the epochs' training loops (`epoch_seconds`), in this session (the
    epochs from `start_epoch` on) and in all. Distillation settings are written only for a
    run that distilled."""
    from pointkd.checkpoint import load_model
    from pointkd.metrics import count_flops
    from pointkd.models import count_parameters
    from pointkd.stages import evaluate

    device, best, history = fitted.device, fitted.best, fitted.history
    start_epoch = fitted.start_epoch
    try:
        test = evaluate.run(evaluate.EvalConfig(
            checkpoints=[str(out / "best.pt")], data=cfg.data.path, split="test",
            device=str(device), batch_size=cfg.train.eval_batch_size, latency=False,
            normalize=cfg.data.normalize, progress=False)).report
    except DataError as exc:  # no test split: the cost of the model all the same
        model, meta = load_model(out / "best.pt", device)
        cost = {"params": count_parameters(model),
                "flops": count_flops(model, meta["num_points"], device)}
        scores = {"test_note": f"no test split evaluated: {exc}"}
    else:
        cost = {"params": test["params"], "flops": test["flops"]}
        m = test["single_view"]
        scores = {"test_oa": m["oa"], "test_macc": m["macc"], "test_per_class": m["per_class"]}
    mode = {"plain": "plain", "online": "online-kd", "offline": "offline-kd"}[cfg.distill.mode]
    results = {"model": cfg.model.name, **cost, "best_epoch": best["epoch"],
               "val_oa": best["val_oa"] if "val_oa" in history[-1] else None,
               "epochs": len(history),
               "train_seconds_this_session": sum(h["epoch_seconds"]
                                                 for h in history[start_epoch:]),
               "train_seconds_total": sum(h["epoch_seconds"] for h in history),
               "seed": cfg.train.seed, "device": str(device), "data": cfg.data.path,
               "mode": mode}
    if mode != "plain":
        results.update(alpha=cfg.distill.alpha, beta=cfg.distill.beta, tau=cfg.distill.tau)
    results.update(scores)
    safe_io.write_text(out / "results.json", json.dumps(results, indent=1))
    return TrainResult(results, out=str(out))
