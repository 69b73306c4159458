"""The settings of every stage but training (`pointkd.config.run`), each a dataclass whose
fields, ranges (`LIMITS`), cross-field rules (`CHECKS`) and help (the comment beside each field)
are declared once. The CLI's options are these fields; `check()` names the option at fault.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from pointkd.config.limits import Range, check_settings, option
from pointkd.config.types import AugmentSpec, Normalization
from pointkd.errors import ConfigError, RecordError


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
