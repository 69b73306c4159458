"""The settings of a training run (`pointkd train`, `pointkd distill`): one `RunConfig` of
sections data, model, augment, optim, train, distill, each a dataclass whose fields, help
(`setting(default, help)`), ranges (`LIMITS`) and cross-field rules (`CHECKS`) are declared
beside them. A field declared with a `flag` is also a command-line shortcut (`--epochs N` is
`train.epochs=N`); every field is a `section.key=value` override.

A run's config is built from defaults, then a YAML file (`--config x.yaml`), then
`section.key=value` overrides (`load_config`), and the resolved result is written as
`config.yaml` into the run directory. Unknown keys and values of the wrong type raise a
`ConfigError` naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from pointkd.config.files import load_yaml_file, parse_override
from pointkd.config.limits import (
    MAX_POINTS,
    MAX_THREADS,
    SEED,
    Range,
    setting,
)
from pointkd.config.merge import _finish, _merge, _nest, validate
from pointkd.config.types import AugmentSpec


@dataclass
class DataConfig:
    path: str = setting(
        "", "dataset: HDF5 folder, class folders, or 'synthetic'; no default: a run names its "
        "data, here or in a config that means one dataset (offline KD: the records')",
        flag="--data")
    num_points: int = setting(1024, "points per cloud")
    val_fraction: float = setting(0.1, "stratified validation split carved from train")
    split_seed: int | None = setting(
        None, "seed of that split (null: train.seed). Members of an ensemble trained with "
        "different seeds but one split_seed share their validation shapes, so the ensemble "
        "can be chosen on shapes none of them trained on")
    normalize: bool = setting(True, "unit-sphere normalisation of every cloud")
    LIMITS: ClassVar[dict] = {"num_points": Range(1, MAX_POINTS),
                              "val_fraction": Range(0.0, 1.0, high_open=True),
                              "split_seed": SEED}


@dataclass
class ModelConfig:
    name: str = setting("pointnet", "model name (see `pointkd models`)",
                        flag={"train": "--model", "distill": "--student"})
    kwargs: dict = setting(default_factory=dict, help="passed to create_model")
    LIMITS: ClassVar[dict] = {"name": Range(text=True)}
    CHECKS: ClassVar[tuple] = ((lambda m: "num_classes" not in m.kwargs,
                                "model.kwargs must not set num_classes (it comes from the data)"),)


@dataclass
class OptimConfig:
    name: Literal["adamw", "sgd"] = setting("adamw", "optimizer")
    lr: float = setting(1e-3, "peak learning rate")
    weight_decay: float = setting(1e-2, "weight decay")
    momentum: float = setting(0.9, "sgd only")
    warmup_epochs: int = setting(0, "linear warm-up, then cosine decay to min_lr")
    min_lr: float = setting(1e-5, "learning rate at the end of the cosine decay")
    lr_scaling: Literal["none", "linear", "sqrt"] = setting(
        "none", "several processes (torchrun): the effective batch is world x "
        "train.batch_size; scale lr by world (linear), sqrt(world) (sqrt) or not at all (none)")
    LIMITS: ClassVar[dict] = {
        "lr": Range(0.0, low_open=True), "weight_decay": Range(0.0),
        "momentum": Range(0.0, 1.0, high_open=True), "warmup_epochs": Range(0),
        "min_lr": Range(0.0)}
    CHECKS: ClassVar[tuple] = ((lambda o: o.min_lr <= o.lr, "optim.min_lr must be <= optim.lr"),)


@dataclass
class TrainConfig:
    epochs: int = setting(50, "passes over the training set", flag="--epochs")
    batch_size: int = setting(
        32, "clouds per training step (>= 2: BatchNorm cannot train on a batch of one cloud)")
    eval_batch_size: int = setting(64, "clouds per forward pass when evaluating")
    label_smoothing: float = setting(0.0, "label smoothing of the cross-entropy")
    grad_clip: float = setting(0.0, "max grad norm (0 = off)")
    seed: int = setting(0, "seed of the initialisation, the batches and the augmentation",
                        flag="--seed")
    device: str = setting("auto", "auto | cpu | cuda | cuda:N", flag="--device")
    amp: bool = setting(True, "bf16 autocast of the student on CUDA; ignored on CPU "
                        "(teachers always run as `record` runs them)")
    threads: int = setting(0, "CPU threads for PyTorch (0 = torch's own choice; fewer than the "
                           "cores on a busy machine; at most 4 per core)", flag="--threads")
    max_steps_per_epoch: int = setting(0, "0 = full epoch; >0 truncates (smoke tests)")
    progress: bool = setting(True, "a line per epoch (a live bar on a terminal)")
    sync_bn: bool = setting(False, "several processes: BatchNorm statistics over all of them")
    LIMITS: ClassVar[dict] = {
        "epochs": Range(1, 1_000_000), "batch_size": Range(2, 1_000_000),
        "eval_batch_size": Range(1, 1_000_000),
        "label_smoothing": Range(0.0, 1.0, high_open=True), "grad_clip": Range(0.0),
        "seed": SEED, "device": Range(text=True), "threads": Range(0, MAX_THREADS),
        "max_steps_per_epoch": Range(0)}


@dataclass
class DistillConfig:
    records: str = setting(
        "", "record-set directory (offline KD); repeat to add record sets over other shapes, "
        "e.g. unlabelled ones (distill.extra_records)", flag={"distill": "--records"},
        repeat=True, rest="extra_records")
    teacher: str = setting(
        "", "teacher (online KD, with --online): checkpoint or .onnx; repeat "
        "for an ensemble, whose target is the teachers' mean logits as `record` stores them "
        "(distill.extra_teachers)", flag={"distill": "--teacher"}, repeat=True,
        rest="extra_teachers")
    online: bool = setting(False, "classic online KD, teacher in memory",
                           flag={"distill": "--online"})
    alpha: float = setting(1.0, "KD weight", flag={"distill": "--alpha"})
    beta: float = setting(0.0, "NWSD weight; negative pushes away from the student's past "
                          "self", flag={"distill": "--beta"})
    tau: float = setting(4.0, "temperature", flag={"distill": "--tau"})
    nwsd_warmup_epochs: int = setting(5, "beta is 0 before this epoch")
    self_target: Literal["shape", "row", "ema"] = setting(
        "shape", "where z_self comes from: shape = the student's logits at its previous visit "
        "of the same shape (any record row of it), row = previous visit of the same record "
        "row, ema = an EMA copy of the student run on the current batch")
    ema_decay: float = setting(0.999, "decay of that EMA copy")
    rows_per_epoch: Literal["one_per_shape", "all"] = setting(
        "one_per_shape", "record rows an epoch trains on: one per shape, or all of them")
    use_k: int = setting(
        0, "use only copies k < use_k of each shape (0 = all K): the very rows a recording "
        "with K = use_k and the same seed holds, so one record set serves a K ablation")
    teacher_votes: int = setting(
        0, "online KD: the teacher's target is its mean over the cloud and this many "
        "rescaled views (what `record --votes` stores; offline records carry their own)")
    extra_teachers: list[str] = setting(
        default_factory=list, help="online KD: more teachers, averaged with distill.teacher "
        "(mean logits, each one's votes as distill.teacher_votes)")
    extra_records: list[str] = setting(
        default_factory=list, help="more record sets, each over its own pool of shapes (all "
        "of them train; none validates): rows of a set recorded with --unlabelled get the KD "
        "terms only (docs/records.md)")
    LIMITS: ClassVar[dict] = {
        "alpha": Range(0.0), "tau": Range(0.0, low_open=True), "nwsd_warmup_epochs": Range(0),
        "ema_decay": Range(0.0, 1.0, high_open=True), "use_k": Range(0), "teacher_votes": Range(0)}
    CHECKS: ClassVar[tuple] = (
        (lambda d: d.beta == 0 or d.alpha + d.beta > 0,
         "NWSD needs distill.alpha + distill.beta > 0"),
        (lambda d: not d.online or d.teacher, "online KD needs a teacher checkpoint (--teacher)"),
        (lambda d: not (d.online and d.records),
         "choose either --records (offline) or --online --teacher, not both"),
        (lambda d: not d.extra_teachers or d.teacher,
         "distill.extra_teachers need distill.teacher (the first teacher)"),
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
    out: str = setting("runs/default", "run directory", flag="--out")
    data: DataConfig = setting(default_factory=DataConfig, help="the dataset")
    model: ModelConfig = setting(default_factory=ModelConfig, help="the model trained")
    augment: AugmentSpec = setting(default_factory=AugmentSpec,
                                   help="training augmentation (pointkd.augment)")
    optim: OptimConfig = setting(default_factory=OptimConfig, help="optimizer and schedule")
    train: TrainConfig = setting(default_factory=TrainConfig, help="the training loop")
    distill: DistillConfig = setting(default_factory=DistillConfig,
                                     help="where the targets come from, and their weights")
    CHECKS: ClassVar[tuple] = ((lambda c: c.out.strip() != "", "out must not be empty"),)


@dataclass
class RunCommand:
    """What `pointkd train` and `pointkd distill` take besides `RunConfig` shortcuts: where
    the config comes from, and the other arguments of `stages.train.run`."""

    config: str | None = setting(None, "YAML config (see configs/)")
    resume: bool = setting(False, "continue from OUT/last.pt")
    overwrite: bool = setting(False, "replace pointkd's own files in an existing run "
                              "directory (docs/usage.md: Output directories)")
    overrides: list[str] = setting(
        default_factory=list, help="dotted config overrides, e.g. train.epochs=5 "
        "optim.lr=0.002", positional=True, metavar="section.key=value")


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


