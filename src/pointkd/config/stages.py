"""The settings of every command but training (`pointkd.config.run`), each a dataclass whose
fields, help (`setting(default, help)`), ranges (`LIMITS`) and cross-field rules (`CHECKS`)
are declared once. The CLI's options are these fields (`pointkd.cli` builds them from here);
`check()` names the option at fault. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from pointkd.config.limits import (
    MAX_POINTS,
    MAX_THREADS,
    SEED,
    Range,
    check_settings,
    label,
    setting,
)
from pointkd.config.run import TrainConfig
from pointkd.config.types import AugmentSpec, Normalization
from pointkd.errors import ConfigError, RecordError

DEVICE = "auto | cpu | cuda | cuda:N"
NUM_POINTS = Range(1, MAX_POINTS)
ExportSampler = Literal["fps", "fps_coarse", "first"]


def _augment_of(path: str) -> AugmentSpec:
    """`--config x.yaml` of `record`: the spec of that config's `augment` section."""
    from pointkd.config.run import augment_spec

    return augment_spec(path)


@dataclass
class ProcessConfig:
    """Settings of the process a command runs in rather than of its stage; the CLI applies
    them before the stage runs (a Python caller sets torch's threads itself)."""

    threads: int | None = setting(
        None, "CPU threads for PyTorch (default: torch's own choice; fewer than the cores on a "
        f"busy machine; at most {MAX_THREADS}, 4 per core)")
    native_ops: Literal["auto", "off"] | None = setting(
        None, "pointkd's C++ CPU kernels: auto (default: built once on first use, else the "
        "PyTorch ops) or off; the same as POINTKD_NATIVE_OPS")
    nproc: int = setting(0, "run as N processes on this machine (torchrun --standalone); see "
                         "docs/distributed.md")
    LIMITS: ClassVar[dict] = {"threads": Range(1, MAX_THREADS), "nproc": Range(0)}


@dataclass
class RecordConfig:
    """`pointkd record`: which teachers to record, on what data, how (docs/records.md)."""

    teachers: list[str] = setting(
        help="pointkd checkpoint, model.onnx, or package.module:factory / file.py:factory "
        "(with --weights); repeat for several teachers", flag="--teacher", repeat=True)
    data: str = setting(help="the dataset whose train split is recorded")
    out: str = setting(help="the record-set directory")
    k: int = setting(10, "augmented copies per training shape")
    seed: int = setting(0, "every row's augmentation derives from (seed, shape, k)")
    logits: Literal["fp32", "fp16", "int8"] = setting("int8", "how the logits are stored")
    topk: int = setting(0, "store only the top-k logits and the tail's log-sum-exp (0 = all)")
    combine: Literal["mean", "each"] = setting(
        "mean", "several teachers: store their mean logits, or each one's")
    votes: int = setting(
        0, "store each teacher's mean logits over the replayed cloud and N rescaled views of "
        "it (multi-view voting; 0 = off; costs N+1 forwards)")
    unlabelled: bool = setting(
        False, "withhold the data's labels from students: these rows get the KD terms only "
        "(distill them beside a labelled set: --records A --records B)")
    batch_size: int = setting(64, "rows per teacher batch and per write (the resume grid)")
    device: str = setting("auto", DEVICE)
    resume: bool = setting(False, "continue the recording in OUT")
    overwrite: bool = setting(False, "replace the record set in OUT (only its own files)")
    augment: AugmentSpec = setting(
        default_factory=AugmentSpec, help="YAML config whose `augment` section sets the spec "
        "(default: pointkd's augmentation)", flag="--config", metavar="CONFIG",
        from_cli=_augment_of)
    progress: bool = setting(True, "a live bar on a terminal, a line per tenth of the rows "
                             "in a log")
    weights: list[str] = setting(
        default_factory=list, help="weights of a module:factory teacher (torch.load "
        "weights_only, or .safetensors); one per such teacher, in order", repeat=True)
    class_names: str | None = setting(
        None, "file: the teacher's classes, one a line, in its output order (for teachers "
        "that do not carry names)")
    teacher_normalization: Normalization | None = setting(
        None, "input normalisation of ONNX/module teachers that declare none (default "
        "pointkd: unit sphere, then augmented)")
    LIMITS: ClassVar[dict] = {"k": Range(1), "seed": SEED, "batch_size": Range(1),
                              "topk": Range(0), "votes": Range(0)}
    CHECKS: ClassVar[tuple] = (
        (lambda r: bool(r.teachers), "no teacher checkpoint given"),
        (lambda r: not (r.resume and r.overwrite), "choose either --resume or --overwrite"))

    def check(self) -> None:
        """Every rule above; a problem is a one-line RecordError naming the option."""
        check_settings(self, label(RecordConfig), RecordError)


@dataclass
class EvalConfig:
    """`pointkd eval`: one checkpoint, or several evaluated as their ensemble (mean logits)."""

    checkpoints: list[str] = setting(
        help="checkpoint; several = their ensemble (mean logits, as `record` stores)",
        positional=True, metavar="checkpoint")
    data: str = setting(help="the dataset to evaluate on")
    split: str = setting("test", "the split to evaluate; val = the validation shapes a run "
                         "carves from train (--val-seed, --val-fraction: as the run's)")
    val_seed: int = setting(0, "with --split val: the seed of that split (a run's "
                            "data.split_seed, else its train.seed)")
    val_fraction: float = setting(0.1, "with --split val: the run's data.val_fraction")
    out: str | None = setting(None, "directory for metrics JSON and confusion PNG "
                              "(eval_<split>.json, confusion_<split>.png)")
    device: str = setting("auto", DEVICE)
    votes: int = setting(0, "extra randomly scaled copies averaged in (multi-view voting; "
                         "0 = off)")
    batch_size: int = setting(32, "clouds per forward pass")
    latency: bool = setting(True, "measure ms per cloud at batch 1 and 32")
    normalize: bool = setting(True, "load the data in pointkd's unit-sphere normalisation",
                              cli=False)
    progress: bool = setting(True, "a live bar per model on a terminal", cli=False)
    overwrite: bool = setting(False, "replace an earlier eval_<split>.json / "
                              "confusion_<split>.png in --out")
    LIMITS: ClassVar[dict] = {"split": Range(text=True), "votes": Range(0),
                              "batch_size": Range(1), "val_seed": SEED,
                              "val_fraction": Range(0.0, 1.0, low_open=True, high_open=True)}
    CHECKS: ClassVar[tuple] = ((lambda e: bool(e.checkpoints), "no checkpoint given"),)

    def check(self) -> None:
        """Every rule above; a problem is a one-line ConfigError naming the option."""
        check_settings(self, label(EvalConfig), ConfigError)


@dataclass
class PredictConfig:
    """`pointkd predict`: the top classes of point-cloud files (.npy .xyz .txt .pcd .ply
    .off), by one checkpoint."""

    checkpoint: str = setting(help="a pointkd checkpoint", positional=True)
    files: list[str] = setting(help="files, folders or glob patterns", positional=True)
    topk: int = setting(3, "classes reported per file")
    json: bool = setting(False, "machine-readable output")
    batch_size: int = setting(32, "files per forward pass")
    min_points: int | None = setting(
        None, "a point file with fewer points is an error (default 16; meshes are sampled on "
        "their surface)")
    device: str = setting("auto", DEVICE)
    progress: bool = setting(True, "a live bar on a terminal (more files than a batch)")
    LIMITS: ClassVar[dict] = {"topk": Range(1), "batch_size": Range(1),
                              "min_points": Range(1)}
    CHECKS: ClassVar[tuple] = ((lambda p: bool(p.files), "no files given"),)

    def check(self) -> None:
        """Every rule above; a problem is a one-line ConfigError naming the option."""
        check_settings(self, label(PredictConfig), ConfigError)


@dataclass
class ExportConfig:
    """`pointkd export`: a checkpoint as an ONNX file (dynamic batch, and point count where
    the model allows), checked against PyTorch."""

    checkpoint: str = setting(help="a pointkd checkpoint", positional=True)
    onnx: str = setting(help="output .onnx path")
    overwrite: bool = setting(False, "replace an existing --onnx file")
    opset: int = setting(18, "ONNX opset version")
    check_data: str | None = setting(
        None, "dataset whose test split is used for the parity check")
    check_count: int = setting(256, "clouds of the parity check")
    sampler: ExportSampler | None = setting(
        None, "students: export with this anchor sampler instead of the trained one (faster "
        "in ONNX Runtime, less accurate; 'first' needs points in random order); with "
        "--check-data the cost is printed. A student trained with model.kwargs.sampler=first "
        "exports the FPS-free graph at no cost")
    device: str = setting("cpu", DEVICE)
    LIMITS: ClassVar[dict] = {"opset": Range(7), "check_count": Range(1)}

    def check(self) -> None:
        """Every rule above; a problem is a one-line ConfigError naming the option."""
        check_settings(self, label(ExportConfig), ConfigError)


@dataclass
class RecordsInfoConfig:
    """`pointkd records info`: rows, K, bytes per row, size, teachers, spec."""

    dir: str = setting(help="a record-set directory", positional=True)


@dataclass
class RecordsVerifyConfig:
    """`pointkd records verify`: re-check checksums, sizes, dataset, teacher."""

    dir: str = setting(help="a record-set directory", positional=True)
    data: str | None = setting(None, "dataset the records must have been made for")
    teachers: list[str] = setting(
        default_factory=list, help="teacher(s) it must match: checkpoint, .onnx, or "
        "module:factory", flag="--teacher", repeat=True)
    weights: list[str] = setting(default_factory=list,
                                 help="weights of module:factory teachers", repeat=True)
    config: str | None = setting(None, "YAML config whose augment section the records must "
                                 "match")


@dataclass
class RecordsStatsConfig:
    """`pointkd records stats`: teacher accuracy, softness at each tau, view spread."""

    dir: str = setting(help="a record-set directory", positional=True)
    data: str | None = setting(None, "dataset for the labels (default: the one the manifest "
                               "names)")
    json: bool = setting(False, "print the stats as JSON")


@dataclass
class DataInfoConfig:
    """`pointkd data info`: per-class counts, points per shape, bounds, fingerprint."""

    path: str = setting(help="HDF5 folder, class-folder dataset, or 'synthetic'",
                        positional=True)
    split: list[str] = setting(default_factory=lambda: ["train", "test"],
                               help="splits to describe", nargs="+")
    num_points: int | None = setting(
        None, "points per shape (folder/synthetic datasets; default 1024)")
    LIMITS: ClassVar[dict] = {"num_points": NUM_POINTS}


@dataclass
class DataPreviewConfig:
    """`pointkd data preview`: a PNG grid of sample clouds."""

    path: str = setting(help="HDF5 folder, class-folder dataset, or 'synthetic'",
                        positional=True)
    split: str = setting("train", "the split to draw from")
    out: str = setting("preview.png", "the PNG file to write")
    overwrite: bool = setting(False, "replace an existing --out file")
    per_class: int = setting(3, "clouds per class")
    num_points: int | None = setting(
        None, "points per shape (folder/synthetic datasets; default 1024)")
    LIMITS: ClassVar[dict] = {"per_class": Range(1), "num_points": NUM_POINTS}


@dataclass
class DataConvertConfig:
    """`pointkd data convert`: any readable dataset as pointkd HDF5 (<split>.h5 +
    shape_names.txt); prints each split's fingerprint."""

    src: str = setting(help="HDF5, class folders (e.g. ModelNet40 .off), "
                       "modelnet40_normal_resampled, ScanObjectNN h5, or 'synthetic'",
                       positional=True)
    dst: str = setting(help="new or empty output folder", positional=True)
    split: list[str] = setting(default_factory=lambda: ["train", "test"],
                               help="splits to convert", nargs="+")
    num_points: int | None = setting(
        None, "points per shape (default: all for HDF5, 1024 for files)")
    LIMITS: ClassVar[dict] = {"num_points": NUM_POINTS}


@dataclass
class ModelsConfig:
    """`pointkd models`: the registered models with their parameter counts."""

    num_classes: int = setting(40, "number of classes the counts are for (40: ModelNet40)",
                               flag=("--classes", "--num-classes"))
    LIMITS: ClassVar[dict] = {"num_classes": Range(2)}


@dataclass
class DemoConfig:
    """`pointkd demo`: the whole pipeline on the synthetic dataset in a few minutes; with
    `data`, distil from the zoo's ModelNet40 records."""

    out: str = setting("runs/demo", "the demo's directory (one run directory per model)")
    data: str | None = setting(
        None, "ModelNet40 (HDF5 folder): distill a student from the committed zoo record set "
        "and compare it with no KD (~1 h on 2 cores)")
    config: str | None = setting(
        None, "preset (default: configs/synthetic_demo.yaml, or "
        "configs/modelnet40_distill_cpu.yaml with --data)")
    epochs: int | None = setting(
        None, "epochs per run instead of the preset's (a shorter check, not the measured "
        "protocol)")
    quick: bool = setting(False, "tiny budget (for tests)")
    device: str | None = setting(None, DEVICE)
    overrides: list[str] = setting(
        default_factory=list, help="dotted overrides for every run, e.g. "
        "train.max_steps_per_epoch=20", positional=True, metavar="section.key=value")
    LIMITS: ClassVar[dict] = {"epochs": TrainConfig.LIMITS["epochs"]}
