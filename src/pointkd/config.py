"""Typed run configuration: dataclasses, YAML presets, dotted command-line overrides.

A run is described by one `RunConfig`. It is built from defaults, then a YAML file
(`--config x.yaml`), then `section.key=value` overrides, and the resolved result is written
as `config.yaml` into the run directory. Unknown keys and values of the wrong type raise a
`ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from pointkd import safe_io
from pointkd.augment import AugmentSpec
from pointkd.errors import ConfigError, RecordError
from pointkd.limits import (
    MAX_POINTS,
    MAX_THREADS,
    Range,
    check_problem,
    check_settings,
    field_problem,
    field_values,
    option,
)
from pointkd.teacher import Normalization


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


@dataclass
class RecordConfig:
    """`pointkd record`: which teachers to record, on what data, how (docs/records.md)."""

    teachers: list[str]  # pointkd checkpoints, .onnx files or module:factory entry points
    data: str  # the dataset whose train split is recorded
    out: str  # the record-set directory
    k: int = 10  # augmented copies per training shape
    seed: int = 0  # every row's augmentation derives from (seed, shape, k)
    logits: Literal["fp32", "fp16", "int8"] = "int8"
    topk: int = 0  # store only the top-k logits and the tail's log-sum-exp (0 = all)
    combine: Literal["mean", "each"] = "mean"  # several teachers: their mean, or each one's
    # extra views per row: each teacher's logits are its mean over the replayed cloud and
    # `votes` rescaled copies of it (`teacher_inference.teacher_logits`; 0 = the cloud alone)
    votes: int = 0
    # withhold the pool's labels from students: its rows get the KD terms only (a pool of
    # unlabelled shapes; or labels a student must not see)
    unlabelled: bool = False
    batch_size: int = 64  # rows per teacher batch and per write (the resume grid)
    device: str = "auto"
    resume: bool = False
    overwrite: bool = False
    augment: AugmentSpec = field(default_factory=AugmentSpec)  # see `augment_spec(path)`
    progress: bool = True
    weights: list[str] = field(default_factory=list)  # one per module:factory teacher
    class_names: str | None = None  # file: the teachers' classes, one a line
    teacher_normalization: Normalization | None = None  # for teachers that declare none
    LIMITS: ClassVar[dict] = {"k": Range(1), "batch_size": Range(1), "topk": Range(0),
                              "votes": Range(0)}
    CHECKS: ClassVar[tuple] = (
        (lambda r: bool(r.teachers), "no teacher checkpoint given"),
        (lambda r: not (r.resume and r.overwrite), "choose either --resume or --overwrite"))

    def check(self) -> None:
        """Every rule above; a problem is a one-line RecordError naming the option."""
        check_settings(self, option, RecordError)


@dataclass
class EvalConfig:
    """`pointkd eval`: one checkpoint, or several evaluated as their ensemble (mean logits)."""

    checkpoints: list[str]
    data: str
    split: str = "test"
    out: str | None = None  # a directory for eval_<split>.json and confusion_<split>.png
    device: str = "auto"
    votes: int = 0  # extra randomly scaled copies averaged in (multi-view voting; 0 = off)
    batch_size: int = 32
    latency: bool = True  # measure ms per cloud at batch 1 and 32
    normalize: bool = True  # load the data in pointkd's unit-sphere normalisation
    progress: bool = True  # a live bar per model on a terminal
    overwrite: bool = False  # replace an earlier eval_<split>.json in `out`
    LIMITS: ClassVar[dict] = {"split": Range(text=True), "votes": Range(0),
                              "batch_size": Range(1)}
    CHECKS: ClassVar[tuple] = ((lambda e: bool(e.checkpoints), "no checkpoint given"),)

    def check(self) -> None:
        """Every rule above; a problem is a one-line ConfigError naming the option."""
        check_settings(self, option, ConfigError)


def _coerce(value: Any, typ: Any, key: str) -> Any:
    """Check/convert one value against its annotated type, naming `key` on failure."""
    origin = typing.get_origin(typ)
    if origin is Literal:  # the type of its values here; which value, `validate` checks
        return _coerce(value, type(typing.get_args(typ)[0]), key)
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
    if origin is list:
        if isinstance(value, list):
            (item,) = typing.get_args(typ)
            return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
    raise ConfigError(f"config key '{key}': unsupported type {typ}")


@dataclass
class _Draft:
    """A frozen section (the augmentation spec) while a config is being merged: its values so
    far. `_finish` checks and builds it once every file and override is in, so overrides may
    pass through states its own checks refuse (scale_low=2 before scale_high=3)."""

    cls: type
    values: types.SimpleNamespace


def _merge(obj: Any, values: dict, prefix: str = "", cls: type | None = None) -> None:
    """Merge a nested mapping into a dataclass instance (or the values of a `_Draft` of
    dataclass `cls`) in place, validating keys and types."""
    if not isinstance(values, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<root>'}' must be a mapping")
    cls = cls or type(obj)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown config key '{full}'")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current) and current.__dataclass_params__.frozen:
            current = _Draft(type(current), types.SimpleNamespace(**field_values(current)))
            setattr(obj, key, current)
        if isinstance(current, _Draft):
            _merge(current.values, value, f"{full}.", current.cls)
        elif dataclasses.is_dataclass(current):
            _merge(current, value, f"{full}.")
        else:
            setattr(obj, key, _coerce(value, hints[key], full))


def _finish(cfg: RunConfig) -> RunConfig:
    """Build the frozen sections merged into `cfg`, each checked first (with the config key
    in the message; the section's own checks would not name it)."""
    for f in dataclasses.fields(cfg):
        draft = getattr(cfg, f.name)
        if isinstance(draft, _Draft):
            values = vars(draft.values)
            _check_section(draft.cls, values, f"{f.name}.")
            setattr(cfg, f.name, draft.cls(**values))
    return cfg


# A config is a few hundred values, a handful of levels deep. The bounds stop, in a fraction
# of a second and before any value is built, YAML that would expand to millions of values
# through aliases of aliases ("billion laughs"), nest deep enough for a RecursionError, or
# simply be some other, huge file.
MAX_YAML_VALUES = 100_000  # scalars + collections, every alias counted as what it expands to
MAX_YAML_DEPTH = 64
MAX_CONFIG_BYTES = 1 << 20


class YAMLLimitError(yaml.YAMLError):
    """YAML beyond the bounds above (a one-line message)."""


class BoundedLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that counts while composing: nesting depth, and each node's expanded
    size (an alias counts as the whole value it names, so sharing cannot hide a blow-up).
    An alias to a value that contains it (a cycle) is refused too."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0
        self._sizes: dict[int, int] = {}  # id(node) -> expanded size, once composed

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        line = self.peek_event().start_mark.line + 1
        if self.check_event(yaml.AliasEvent):
            node = super().compose_node(parent, index)
            if id(node) not in self._sizes:  # its anchor is still being composed
                raise YAMLLimitError(f"line {line}: an alias inside the value it names (a "
                                     "cycle)")
            return node
        if self._depth >= MAX_YAML_DEPTH:
            raise YAMLLimitError(f"line {line}: nested deeper than {MAX_YAML_DEPTH} levels")
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        size = 1 + sum(self._sizes[id(child)] for child in _children(node))
        if size > MAX_YAML_VALUES:
            raise YAMLLimitError(f"line {line}: expands to more than {MAX_YAML_VALUES:,} "
                                 "values (aliases of aliases?)")
        self._sizes[id(node)] = size
        return node


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def load_yaml(text: str) -> Any:
    """`yaml.safe_load` within the bounds above; YAMLError (YAMLLimitError) otherwise."""
    return yaml.load(text, Loader=BoundedLoader)  # BoundedLoader is a SafeLoader


def load_yaml_file(path: str | Path) -> Any:
    """A YAML file's value (None when empty); any problem is a one-line ConfigError naming
    the file: missing, unreadable, too large, not UTF-8, not YAML, beyond the bounds."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        size = p.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {p} is {size:,} bytes; a config is at most "
                              f"{MAX_CONFIG_BYTES:,} (is it the right file?)")
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {p} is not UTF-8 text (byte {exc.start:,} is "
                          f"0x{raw[exc.start]:02x}); is it the right file?") from None
    try:
        return load_yaml(text)
    except YAMLLimitError as exc:
        raise ConfigError(f"config file {p}: {exc}") from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"config file {p} is not valid YAML: {first}") from None


_DECIMAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.epochs=5` -> (["train", "epochs"], 5); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form section.key=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = load_yaml(raw) if raw != "" else ""
    except YAMLLimitError as exc:
        raise ConfigError(f"override '{key.strip()}': {exc}") from None
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
        values = load_yaml_file(path) or {}
        if isinstance(values, dict):
            values.pop("demo", None)  # the plan of `pointkd demo` (demo.py), not a run setting
        _merge(cfg, values)
    for text in overrides:
        keys, value = parse_override(text)
        _merge(cfg, _nest(keys, value))
    validate(_finish(cfg))
    return cfg


def validate(cfg: RunConfig) -> None:
    """Every section's fields against their rules (`pointkd.limits`: Literal choices and
    LIMITS; floats must be finite everywhere), then every section's cross-field CHECKS."""
    sections = [(f.name, getattr(cfg, f.name)) for f in dataclasses.fields(cfg)]
    sections = [(name, value) for name, value in sections if dataclasses.is_dataclass(value)]
    for name, section in sections:
        _check_fields(type(section), field_values(section), f"{name}.")
    for _, section in [*sections, ("", cfg)]:
        message = check_problem(type(section), field_values(section))
        if message:
            raise ConfigError(message)


def _check_fields(cls: type, values: dict, prefix: str) -> None:
    bad = field_problem(cls, values)
    if bad:
        name, why, value = bad
        raise ConfigError(f"config key '{prefix}{name}' {why}, got {value!r}")


def _check_section(cls: type, values: dict, prefix: str) -> None:
    """A section's fields, then its cross-field checks."""
    _check_fields(cls, values, prefix)
    message = check_problem(cls, values)
    if message:
        raise ConfigError(message)


def augment_spec(path: str | Path | None) -> AugmentSpec:
    """The augmentation spec of a YAML config's `augment` section (defaults without one):
    what `pointkd record --config` records with and `records verify --config` checks."""
    if not path:
        return AugmentSpec()
    return load_config(path).augment


def to_dict(cfg: RunConfig) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """`config.yaml` of a run, replaced atomically and never through a link."""
    safe_io.write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def from_dict(values: dict) -> RunConfig:
    cfg = RunConfig()
    _merge(cfg, values)
    return _finish(cfg)
