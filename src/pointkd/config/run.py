"""The settings of a training run (`pointkd train`, `pointkd distill`): one `RunConfig` of
sections data, model, augment, optim, train, distill, each a dataclass whose fields, ranges
(`LIMITS`) and cross-field rules (`CHECKS`) are declared beside them.

A run's config is built from defaults, then a YAML file (`--config x.yaml`), then
`section.key=value` overrides (`load_config`), and the resolved result is written as
`config.yaml` into the run directory. Unknown keys and values of the wrong type raise a
`ConfigError` naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from pointkd.config.files import load_yaml_file, parse_override
from pointkd.config.limits import (
    MAX_POINTS,
    MAX_THREADS,
    Range,
)
from pointkd.config.merge import _finish, _merge, _nest, validate
from pointkd.config.types import AugmentSpec


@dataclass
class DataConfig:
    # HDF5 folder, class-folder dataset, or "synthetic"; no default: a run names its data
    # (--data, or data.path in a config that means one dataset)
    path: str = ""
    num_points: int = 1024
    val_fraction: float = 0.1  # stratified validation split carved from train
    # seed of that split (null: train.seed). Members of an ensemble trained with different
    # seeds but one split_seed share their validation shapes, so the ensemble can be chosen
    # on shapes none of them trained on
    split_seed: int | None = None
    normalize: bool = True
    LIMITS: ClassVar[dict] = {"num_points": Range(1, MAX_POINTS),
                              "val_fraction": Range(0.0, 1.0, high_open=True),
                              "split_seed": Range(0, 2**32 - 1)}


@dataclass
class ModelConfig:
    name: str = "pointnet"
    kwargs: dict = field(default_factory=dict)  # passed to create_model
    LIMITS: ClassVar[dict] = {"name": Range(text=True)}
    CHECKS: ClassVar[tuple] = ((lambda m: "num_classes" not in m.kwargs,
                                "model.kwargs must not set num_classes (it comes from the data)"),)


@dataclass
class OptimConfig:
    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-2
    momentum: float = 0.9  # sgd only
    warmup_epochs: int = 0  # linear warm-up, then cosine decay to min_lr
    min_lr: float = 1e-5
    # several processes (torchrun): the effective batch is world x train.batch_size; scale lr
    # by world ("linear"), sqrt(world) ("sqrt") or not at all ("none", the default)
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    LIMITS: ClassVar[dict] = {
        "lr": Range(0.0, low_open=True), "weight_decay": Range(0.0),
        "momentum": Range(0.0, 1.0, high_open=True), "warmup_epochs": Range(0),
        "min_lr": Range(0.0)}
    CHECKS: ClassVar[tuple] = ((lambda o: o.min_lr <= o.lr, "optim.min_lr must be <= optim.lr"),)


@dataclass
class TrainConfig:
    epochs: int = 50
    batch_size: int = 32
    eval_batch_size: int = 64
    label_smoothing: float = 0.0
    grad_clip: float = 0.0  # max grad norm (0 = off)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU
    threads: int = 0  # torch.set_num_threads (0 = torch default; at most 4 per CPU core)
    max_steps_per_epoch: int = 0  # 0 = full epoch; >0 truncates (smoke tests)
    progress: bool = True
    sync_bn: bool = False  # several processes: BatchNorm statistics over all of them
    # batch_size >= 2: BatchNorm cannot train on a batch of one cloud
    LIMITS: ClassVar[dict] = {
        "epochs": Range(1, 1_000_000), "batch_size": Range(2, 1_000_000),
        "eval_batch_size": Range(1, 1_000_000),
        "label_smoothing": Range(0.0, 1.0, high_open=True), "grad_clip": Range(0.0),
        "seed": Range(0, 2**32 - 1), "device": Range(text=True), "threads": Range(0, MAX_THREADS),
        "max_steps_per_epoch": Range(0)}


@dataclass
class DistillConfig:
    records: str = ""  # record-set directory (offline KD)
    teacher: str = ""  # teacher checkpoint (online KD)
    online: bool = False
    alpha: float = 1.0  # weight of KD(teacher)
    beta: float = 0.0  # weight of NWSD; negative pushes away from the student's past self
    tau: float = 4.0
    nwsd_warmup_epochs: int = 5  # beta is 0 before this epoch
    # where z_self comes from: "shape" = the student's logits at its previous visit of the same
    # shape (any record row of it), "row" = previous visit of the same record row,
    # "ema" = an EMA copy of the student run on the current batch
    self_target: Literal["shape", "row", "ema"] = "shape"
    ema_decay: float = 0.999
    rows_per_epoch: Literal["one_per_shape", "all"] = "one_per_shape"
    # use only copies k < use_k of each shape (0 = all K): the very rows a recording with
    # K = use_k and the same seed holds, so one record set serves a K ablation
    use_k: int = 0
    # online KD: the teacher's target is its mean over the cloud and this many rescaled views
    # (what `record --votes` stores; offline records carry their own)
    teacher_votes: int = 0
    # more record sets, each over its own pool of shapes (all of them train; none validates):
    # rows of a set recorded with --unlabelled get the KD terms only (docs/records.md)
    extra_records: list[str] = field(default_factory=list)
    LIMITS: ClassVar[dict] = {
        "alpha": Range(0.0), "tau": Range(0.0, low_open=True), "nwsd_warmup_epochs": Range(0),
        "ema_decay": Range(0.0, 1.0), "use_k": Range(0), "teacher_votes": Range(0)}
    CHECKS: ClassVar[tuple] = (
        (lambda d: d.beta == 0 or d.alpha + d.beta > 0,
         "NWSD needs distill.alpha + distill.beta > 0"),
        (lambda d: not d.online or d.teacher, "online KD needs a teacher checkpoint (--teacher)"),
        (lambda d: not (d.online and d.records),
         "choose either --records (offline) or --online --teacher, not both"),
        (lambda d: d.online or not d.teacher,
         "--teacher is for online KD: add --online (offline KD uses --records)"),
        (lambda d: not d.extra_records or (d.records and not d.online),
         "distill.extra_records add record sets to offline KD: give --records first"),
        (lambda d: d.online or d.teacher_votes == 0,
         "distill.teacher_votes is for online KD; records carry their own votes "
         "(pointkd record --votes)"))

    @property
    def mode(self) -> Literal["plain", "online", "offline"]:
        """Where the target comes from: records (offline), a teacher in memory, or nowhere."""
        if self.online:
            return "online"
        return "offline" if self.records else "plain"


@dataclass
class RunConfig:
    out: str = "runs/default"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentSpec = field(default_factory=AugmentSpec)  # declared in pointkd.augment
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    CHECKS: ClassVar[tuple] = ((lambda c: c.out.strip() != "", "out must not be empty"),)


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: RunConfig | None = None,
) -> RunConfig:
    """Defaults (or `base`) <- YAML file <- dotted overrides."""
    cfg = base if base is not None else RunConfig()
    if path:
        values = load_yaml_file(path) or {}
        if isinstance(values, dict):
            values.pop("demo", None)  # the plan of `pointkd demo` (demo.py), not a run setting
        _merge(cfg, values)
    for text in overrides:
        keys, value = parse_override(text)
        _merge(cfg, _nest(keys, value))
    validate(_finish(cfg))
    return cfg


def augment_spec(path: str | Path | None) -> AugmentSpec:
    """The augmentation spec of a YAML config's `augment` section (defaults without one):
    what `pointkd record --config` records with and `records verify --config` checks."""
    if not path:
        return AugmentSpec()
    return load_config(path).augment


def from_dict(values: dict) -> RunConfig:
    cfg = RunConfig()
    _merge(cfg, values)
    return _finish(cfg)


