"""Types shared by several stages' configs, declared once: the augmentation spec (the
`augment` section of a run, and what a record set replays) and a teacher's input
normalisation. No torch here: the CLI builds its options from these without importing it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import ClassVar, Literal

from pointkd.config.limits import MAX_POINTS, Range, check_settings, setting
from pointkd.errors import ConfigError, RecordError

PARAM_NAMES = ("scale_x", "scale_y", "scale_z", "shift_x", "shift_y", "shift_z", "rotation")


PARAM_DIM = len(PARAM_NAMES)
MIX_FIELDS = ("mix", "mix_prob", "mix_max")


@dataclass(frozen=True)
class AugmentSpec:
    """What `apply` does. Defaults follow PointMLP (scale U(2/3, 3/2) per axis, shift
    U(−0.2, 0.2)) plus jitter N(0, 0.01²) clipped at ±0.05 and a point shuffle.

    It is also the `augment` section of a run's config (`pointkd.config.RunConfig`): its
    fields, limits and checks are declared here only."""

    scale_low: float = setting(2.0 / 3.0, "smallest per-axis scale factor")
    scale_high: float = setting(1.5, "largest per-axis scale factor")
    shift: float = setting(0.2, "largest per-axis shift")
    rotate: bool = setting(False, "a uniform rotation about the up axis")
    up_axis: Literal[0, 1, 2] = setting(
        2, "the up axis (the shared ModelNet40 clouds are z-up, as is the synthetic set)")
    jitter_sigma: float = setting(0.01, "per-point Gaussian jitter, standard deviation")
    jitter_clip: float = setting(0.05, "per-point jitter clipped at this magnitude")
    subsample: int = setting(0, "keep this many random points (0 = all)")
    shuffle: bool = setting(True, "shuffle the points")
    dropout: float = setting(
        0.0, "largest fraction of points replaced by the first point (PointNet++)")
    mix: Literal["none", "points", "ball"] = setting(
        "none", "mixed views (PointCutMix-style): a share of the cloud's points replaced by "
        "another training shape's, a random subset of them (points) or the ones nearest a "
        "random point of the cloud (ball); its label weight is the share replaced, and a record "
        "row stores the partner and the share with the teacher's logits on that cloud")
    mix_prob: float = setting(0.5, "the probability that a cloud is mixed")
    mix_max: float = setting(0.5, "the share replaced is uniform in (0, mix_max]")
    # 2: point-level ops from the counter-based hash + inverse-CDF normals, z-up default
    VERSION: ClassVar[int] = 2
    LIMITS: ClassVar[dict] = {
        "scale_low": Range(0.0, low_open=True), "scale_high": Range(0.0, low_open=True),
        "shift": Range(0.0), "jitter_sigma": Range(0.0), "jitter_clip": Range(0.0),
        "subsample": Range(0, MAX_POINTS), "dropout": Range(0.0, 1.0, high_open=True),
        "mix_prob": Range(0.0, 1.0, low_open=True), "mix_max": Range(0.0, 1.0, low_open=True)}
    CHECKS: ClassVar[tuple] = (
        (lambda a: a.scale_high >= a.scale_low, "augment: need 0 < scale_low <= scale_high"),)

    def __post_init__(self) -> None:
        check_settings(self, lambda name: f"bad augmentation spec: {name}", ConfigError)

    def check_points(self, num_points: int) -> None:
        """A subsample needs that many points in every cloud (training and recording)."""
        if self.subsample > num_points:
            raise ConfigError(f"augment.subsample = {self.subsample} but the clouds have only "
                              f"{num_points} points")

    def to_dict(self) -> dict:
        """The manifest's form. Without mixing, the mix settings are left out, so a spec
        written before mixed views existed reads and writes back byte for byte."""
        values = asdict(self)
        if self.mix == "none":
            for name in MIX_FIELDS:
                values.pop(name)
        return {"version": self.VERSION, **values}

    @classmethod
    def from_dict(cls, values: dict) -> AugmentSpec:
        """Inverse of `to_dict`; an unknown version or key is a RecordError."""
        values = dict(values)
        version = values.pop("version", None)
        if version != cls.VERSION:
            raise RecordError(f"augmentation spec version {version} is not supported "
                              f"(this pointkd replays version {cls.VERSION})")
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise RecordError(f"unknown augmentation spec keys: {', '.join(unknown)}")
        try:
            return cls(**values)
        except ConfigError as exc:
            raise RecordError(str(exc)) from None


Normalization = Literal["pointkd", "unit_sphere", "unit_cube", "none"]
