"""Typed run configuration: dataclasses, YAML presets, dotted command-line overrides.

A run is described by one `RunConfig`. It is built from defaults, then a YAML file
(`--config x.yaml`), then `section.key=value` overrides, and the resolved result is written
as `config.yaml` into the run directory. Unknown keys and values of the wrong type raise a
`ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from pointkd.augment import AugmentSpec
from pointkd.errors import ConfigError

MAX_POINTS = 1 << 20  # points per cloud; more is a typo (and would not fit in memory)


@dataclass(frozen=True)
class Range:
    """The allowed values of one config field: [low, high] (either end open or absent), a
    set of `choices`, or a non-empty string (`text`). Floats must also be finite."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple = ()
    text: bool = False

    def problem(self, value: Any) -> str | None:
        """Why `value` is not allowed, or None."""
        if self.choices:
            return None if value in self.choices else \
                "must be one of " + ", ".join(map(str, self.choices))
        if self.text:
            return None if str(value).strip() else "must not be empty"
        if isinstance(value, float) and not math.isfinite(value):
            return "must be a finite number"
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return f"must be {'>' if self.low_open else '>='} {self.low}"
        if self.high is not None and (value >= self.high if self.high_open else
                                      value > self.high):
            return f"must be {'<' if self.high_open else '<='} {self.high}"
        return None


@dataclass
class DataConfig:
    # HDF5 folder, class-folder dataset, or "synthetic"; no default: a run names its data
    # (--data, or data.path in a config that means one dataset)
    path: str = ""
    num_points: int = 1024
    val_fraction: float = 0.1  # stratified validation split carved from train
    normalize: bool = True
    LIMITS: ClassVar[dict] = {"num_points": Range(1, MAX_POINTS),
                              "val_fraction": Range(0.0, 1.0, high_open=True)}


@dataclass
class ModelConfig:
    name: str = "pointnet"
    kwargs: dict = field(default_factory=dict)  # passed to create_model
    LIMITS: ClassVar[dict] = {"name": Range(text=True)}


@dataclass
class AugmentConfig:
    """Mirrors `pointkd.augment.AugmentSpec`; see there for the meaning of each field."""

    scale_low: float = 2.0 / 3.0
    scale_high: float = 1.5
    shift: float = 0.2
    rotate: bool = False
    up_axis: int = 2  # ModelNet40 (and the synthetic set) are z-up
    jitter_sigma: float = 0.01
    jitter_clip: float = 0.05
    subsample: int = 0  # P' points after random subsampling (0 = keep all)
    shuffle: bool = True
    dropout: float = 0.0
    LIMITS: ClassVar[dict] = {
        "scale_low": Range(0.0, low_open=True), "scale_high": Range(0.0, low_open=True),
        "shift": Range(0.0), "up_axis": Range(choices=(0, 1, 2)), "jitter_sigma": Range(0.0),
        "jitter_clip": Range(0.0), "subsample": Range(0, MAX_POINTS),
        "dropout": Range(0.0, 1.0, high_open=True)}


@dataclass
class OptimConfig:
    name: str = "adamw"  # adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 1e-2
    momentum: float = 0.9  # sgd only
    warmup_epochs: int = 0  # linear warm-up, then cosine decay to min_lr
    min_lr: float = 1e-5
    # several processes (torchrun): the effective batch is world x train.batch_size; scale lr
    # by world ("linear"), sqrt(world) ("sqrt") or not at all ("none", the default)
    lr_scaling: str = "none"
    LIMITS: ClassVar[dict] = {
        "name": Range(choices=("adamw", "sgd")), "lr": Range(0.0, low_open=True),
        "weight_decay": Range(0.0), "momentum": Range(0.0, 1.0, high_open=True),
        "warmup_epochs": Range(0), "min_lr": Range(0.0),
        "lr_scaling": Range(choices=("none", "linear", "sqrt"))}


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
    threads: int = 0  # torch.set_num_threads (0 = torch default)
    max_steps_per_epoch: int = 0  # 0 = full epoch; >0 truncates (smoke tests)
    progress: bool = True
    sync_bn: bool = False  # several processes: BatchNorm statistics over all of them
    # batch_size >= 2: BatchNorm cannot train on a batch of one cloud
    LIMITS: ClassVar[dict] = {
        "epochs": Range(1, 1_000_000), "batch_size": Range(2, 1_000_000),
        "eval_batch_size": Range(1, 1_000_000),
        "label_smoothing": Range(0.0, 1.0, high_open=True), "grad_clip": Range(0.0),
        "seed": Range(0, 2**32 - 1), "device": Range(text=True), "threads": Range(0, 4096),
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
    self_target: str = "shape"
    ema_decay: float = 0.999
    rows_per_epoch: str = "one_per_shape"  # one_per_shape | all
    # use only copies k < use_k of each shape (0 = all K): the very rows a recording with
    # K = use_k and the same seed holds, so one record set serves a K ablation
    use_k: int = 0
    LIMITS: ClassVar[dict] = {
        "alpha": Range(0.0), "tau": Range(0.0, low_open=True), "nwsd_warmup_epochs": Range(0),
        "self_target": Range(choices=("shape", "row", "ema")), "ema_decay": Range(0.0, 1.0),
        "rows_per_epoch": Range(choices=("one_per_shape", "all")), "use_k": Range(0)}

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
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)


def _coerce(value: Any, typ: Any, key: str) -> Any:
    """Check/convert one value against its annotated type, naming `key` on failure."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(typ):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key '{key}': {value!r} is not a valid {typ}")
    if typ is type(None):
        if value is None:
            return None
        raise ConfigError(f"config key '{key}': expected null, got {value!r}")
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
    if typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
    if typ is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
    if typ is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
    if typ is dict or origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
    raise ConfigError(f"config key '{key}': unsupported type {typ}")


def _merge(obj: Any, values: dict, prefix: str = "") -> None:
    """Merge a nested mapping into a dataclass instance in place, validating keys and types."""
    if not isinstance(values, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<root>'}' must be a mapping")
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown config key '{full}'")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, f"{full}.")
        else:
            setattr(obj, key, _coerce(value, hints[key], full))


_DECIMAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.epochs=5` -> (["train", "epochs"], 5); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form section.key=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads 1e-4 and 1.0e30 as strings
    return key.strip().split("."), value


def _nest(path: list[str], value: Any) -> dict:
    out: Any = value
    for part in reversed(path):
        out = {part: out}
    return out


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: RunConfig | None = None,
) -> RunConfig:
    """Defaults (or `base`) <- YAML file <- dotted overrides."""
    cfg = base if base is not None else RunConfig()
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            values = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            first = str(exc).splitlines()[0]
            raise ConfigError(f"config file {p} is not valid YAML: {first}") from None
        if isinstance(values, dict):
            values.pop("demo", None)  # the plan of `pointkd demo` (demo.py), not a run setting
        _merge(cfg, values)
    for text in overrides:
        keys, value = parse_override(text)
        _merge(cfg, _nest(keys, value))
    validate(cfg)
    return cfg


def validate(cfg: RunConfig) -> None:
    """Every field against its section's `LIMITS` (floats must be finite everywhere), then
    the checks that relate several fields."""
    for section in dataclasses.fields(cfg):
        value = getattr(cfg, section.name)
        if dataclasses.is_dataclass(value):
            _check_limits(value, f"{section.name}.")
    checks = [
        (cfg.distill.beta == 0 or cfg.distill.alpha + cfg.distill.beta > 0,
         "NWSD needs distill.alpha + distill.beta > 0"),
        (cfg.augment.scale_high >= cfg.augment.scale_low,
         "augment: need 0 < scale_low <= scale_high"),
        (cfg.optim.min_lr <= cfg.optim.lr, "optim.min_lr must be <= optim.lr"),
        ("num_classes" not in cfg.model.kwargs,
         "model.kwargs must not set num_classes (it comes from the data)"),
        (cfg.out.strip() != "", "out must not be empty"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def _check_limits(section: Any, prefix: str) -> None:
    limits = getattr(section, "LIMITS", {})
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        rule = limits.get(f.name, Range())  # no rule: a float must still be finite
        problem = rule.problem(value) if not isinstance(value, bool | dict) else None
        if problem:
            raise ConfigError(f"config key '{prefix}{f.name}' {problem}, got {value!r}")


def augment_spec(path: str | Path | None) -> AugmentSpec:
    """The augmentation spec of a YAML config's `augment` section (defaults without one):
    what `pointkd record --config` records with and `records verify --config` checks."""
    if not path:
        return AugmentSpec()
    return AugmentSpec.from_config(load_config(path).augment)


def to_dict(cfg: RunConfig) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def from_dict(values: dict) -> RunConfig:
    cfg = RunConfig()
    _merge(cfg, values)
    return cfg
