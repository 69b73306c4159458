"""pointkd's Python API: each stage of the pipeline as one function, the same settings as the
command line (a CLI option and a Python argument are the same config field).

    import pointkd

    cfg = pointkd.load_config("configs/synthetic_demo.yaml",
                              ["data.path=synthetic", "model.name=student_s", "out=runs/t"])
    teacher = pointkd.train(cfg)                                  # -> TrainResult
    rec = pointkd.record(pointkd.RecordConfig(teachers=["runs/t/best.pt"], data="synthetic",
                                              out="runs/rec", k=10))  # -> RecordResult
    student = pointkd.distill(pointkd.load_config(overrides=[
        f"distill.records={rec.root}", "model.name=student_xs", "out=runs/s"]))
    report = pointkd.evaluate(pointkd.EvalConfig(["runs/s/best.pt"], "synthetic"))
    print(report.text())

Every function checks its config first (a `PointKDError` with a one-line message naming
the setting at fault) and returns a result with a `text()` method; none prints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from pointkd.config.run import RunConfig, load_config
from pointkd.config.stages import EvalConfig, RecordConfig
from pointkd.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from pointkd.records.reader import RecordSet
    from pointkd.stages.evaluate import Evaluation
    from pointkd.stages.record import RecordResult
    from pointkd.stages.train import TrainResult

__all__ = ["load_config", "RunConfig", "RecordConfig", "EvalConfig", "train", "distill",
           "record", "evaluate", "predict", "export", "create_model", "open_records"]


def train(cfg: RunConfig, *, resume: bool = False, overwrite: bool = False,
          on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    """Train `cfg.model` on `cfg.data` (a teacher, or a student without KD) into `cfg.out`:
    best.pt, last.pt, metrics, curves, results.json. `on_epoch(row)` sees each epoch's
    metrics once they are saved."""
    from pointkd.stages import train as stage

    return stage.run(cfg, resume=resume, overwrite=overwrite, on_epoch=on_epoch)


def distill(cfg: RunConfig, *, resume: bool = False, overwrite: bool = False,
            on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    """Train a student with a teacher's targets: from records (`distill.records`, offline;
    the dataset defaults to the one they were made for) or a teacher in memory
    (`distill.online` + `distill.teacher`). The same loop as `train`."""
    if cfg.distill.mode == "plain":
        raise ConfigError("distill needs a teacher's targets: distill.records (offline) or "
                          "distill.online with distill.teacher")
    return train(cfg, resume=resume, overwrite=overwrite, on_epoch=on_epoch)


def record(cfg: RecordConfig) -> RecordResult:
    """Run the teachers once over `cfg.k` augmented copies of every training shape and store
    the logits with the augmentation that produced them (a record set in `cfg.out`)."""
    from pointkd.stages import record as stage

    return stage.run(cfg)


def evaluate(cfg: EvalConfig) -> Evaluation:
    """OA, mAcc, per-class accuracy, confusion, params, FLOPs and latency of one checkpoint,
    or of several as their ensemble (mean logits)."""
    from pointkd.stages import evaluate as stage

    return stage.run(cfg)


def predict(checkpoint: str, files: Iterable[str], topk: int = 3, batch_size: int = 32,
            device: str = "auto", min_points: int | None = None) -> list[dict]:
    """Top-`topk` classes of every point-cloud file (folders and globs expand):
    {"file", "top": [{"class", "index", "prob"}]}, or {"file", "error"} for a file that
    cannot be read."""
    from pointkd.stages.predict import iter_predictions

    return list(iter_predictions(checkpoint, list(files), topk=topk, batch_size=batch_size,
                                 device=device, progress=False, min_points=min_points))


def export(checkpoint: str, onnx: str, *, check_data: str | None = None, opset: int = 18,
           sampler: str | None = None) -> dict:
    """Write `checkpoint` as an ONNX file (dynamic batch axis; point axis where the model
    allows), checked against PyTorch on `check_data`'s test clouds when given."""
    from pointkd.stages.export import export_onnx

    return export_onnx(checkpoint, onnx, opset=opset, check_data=check_data, sampler=sampler)


def create_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """A registered model (`pointkd models` lists them), timm-style."""
    from pointkd.models import create_model as create

    return create(name, num_classes, **kwargs)


def open_records(directory: str) -> RecordSet:
    """A record set, memory-mapped: its manifest, and `.rows(idx)` -> `RecordBatch`."""
    from pointkd.records import open_records as open_set

    return open_set(directory)
