"""`pointkd records stats`: is a record set worth distilling from? (docs/records.md, "Stats")

`record_stats(dir, data=None)` reads every row once through the reader (`open_records`, its
decoding of every logits encoding) in chunks of whole shapes, and reports:

- size: rows, shapes, K, bytes per row, bytes on disk;
- the teacher's accuracy on its rows (argmax of the stored logits == label), where the labels
  are at hand: `data`, else the dataset the manifest names (refused unless its fingerprint is
  the recorded one; an unreadable or other dataset there, or a set recorded `--unlabelled`,
  only makes it "not available");
- for every τ: mean top-1 probability and mean entropy (nats) of softmax(z / τ);
- the view spread at τ = 1: KL(p_v ‖ m) for every row v, where m is the arithmetic mean of
  the probability vectors of that shape's K views, m = (1/K) Σ_v p_v; its mean and median
  over rows, and the fraction of shapes whose top-1 class is not the same in all K views;
- mixed views (a set recorded with `augment.mix`): the fraction of rows mixed, their mean
  share of replaced points, and (with labels) the teacher's mean probability at τ = 1 of the
  shape's own class and of the partner's class on mixed rows whose classes differ — how
  much of the mix the teacher's rows carry.

`z` is what a student distils from: the reader's decoded logits (their mean with several
stored teachers). Top-k rows decode to the k stored logits and, in each of the other C − k
classes, rest_lse − log(C − k): at τ = 1 the top-k probabilities and the tail's total mass
are the stored ones, and only the mass *within* the tail is spread evenly, so the entropy is
the largest one consistent with the stored numbers (the top-1 probability is exact). All
arithmetic is float64 numpy.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pointkd.errors import ConfigError, PointKDError
from pointkd.records.reader import RecordSet, check_made_for, open_records

DEFAULT_TAUS = (1.0, 2.0, 4.0)
CHUNK_VALUES = 1 << 21  # logits per chunk (rows x classes): ~16 MB per float64 array


@dataclass
class TauStats:
    tau: float
    mean_top_prob: float
    mean_entropy_nats: float


@dataclass
class RecordStats:
    records: str
    rows: int
    shapes: int
    k: int
    classes: int
    encoding: str
    teachers: int
    bytes_per_row: int
    total_bytes: int
    shards: int
    labels: str | None  # where the labels came from; None: accuracy not available
    labels_note: str  # how they were found, or why there are none
    teacher_accuracy: float | None  # fraction of rows whose argmax is the label
    rows_right: int | None
    taus: list[TauStats] = field(default_factory=list)
    uniform_entropy_nats: float = 0.0
    view_kl_mean_nats: float | None = None  # None with K = 1 (no spread to measure)
    view_kl_median_nats: float | None = None
    top1_change_fraction: float | None = None
    top1_change_shapes: int | None = None
    mixed_fraction: float | None = None  # None: not a set of mixed views
    mixed_mean_share: float | None = None
    mixed_own_class_prob: float | None = None  # needs labels
    mixed_partner_class_prob: float | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["definitions"] = {
            "teacher_accuracy": "fraction of rows whose stored logits' argmax is the label",
            "taus": "per tau, means over rows of max_c p_c and -sum_c p_c ln p_c, "
                    "p = softmax(decoded logits / tau)",
            "view_kl": "KL(p_v || m) at tau 1 over rows v, m = arithmetic mean of the "
                       "probability vectors of the K views of v's shape",
            "top1_change_fraction": "fraction of shapes whose argmax is not the same in "
                                    "all K views",
            "mixed_*": "rows of mixed views: fraction mixed, mean share of points replaced; "
                       "mean p (tau 1) of the own and of the partner's class over mixed rows "
                       "whose two classes differ",
        }
        return d

    def text(self) -> str:
        lines = [
            f"record set {self.records}: stats",
            f"  rows        {self.rows:,} = K {self.k} x {self.shapes:,} shapes, "
            f"{self.classes} classes",
            f"  row         {self.bytes_per_row} B per row ({self.encoding}), "
            f"{self.total_bytes / 1e6:.2f} MB in {self.shards} shard(s)",
        ]
        if self.teacher_accuracy is None:
            lines.append(f"  teacher     accuracy not available: {self.labels_note}")
        else:
            lines.append(f"  teacher     right on {100 * self.teacher_accuracy:.2f}% of rows "
                         f"({self.rows_right:,} of {self.rows:,})")
            lines.append(f"  labels      {self.labels_note}")
        for i, t in enumerate(self.taus):
            lines.append(f"  {'softmax' if i == 0 else '':<11} tau {t.tau:g}: mean top-1 "
                         f"probability {t.mean_top_prob:.3f}, mean entropy "
                         f"{t.mean_entropy_nats:.3f} nats"
                         + (f" (uniform: {self.uniform_entropy_nats:.3f})" if i == 0 else ""))
        if self.view_kl_mean_nats is None:
            lines.append("  views       spread not available: K = 1, one view per shape")
        else:
            lines.append(f"  views       KL(view || mean of its shape's {self.k} views) at tau 1:"
                         f" mean {self.view_kl_mean_nats:.4f}, median "
                         f"{self.view_kl_median_nats:.4f} nats")
            lines.append(f"              top-1 class changes across the views of "
                         f"{100 * self.top1_change_fraction:.2f}% of shapes "
                         f"({self.top1_change_shapes:,} of {self.shapes:,})")
        if self.mixed_fraction is not None:
            line = (f"  mixed       {100 * self.mixed_fraction:.1f}% of rows, mean share "
                    f"replaced {self.mixed_mean_share:.3f}")
            if self.mixed_own_class_prob is not None:
                line += (f"; teacher p(own class) {self.mixed_own_class_prob:.3f}, "
                         f"p(partner's class) {self.mixed_partner_class_prob:.3f}")
            lines.append(line)
        lines.append(f"  computed in {self.seconds:.1f} s")
        return "\n".join(lines)


def _labels(rs: RecordSet, root: str, data) -> tuple[np.ndarray | None, str | None, str]:
    """(labels, source, note). An explicit `data` must be the records' dataset (else a
    RecordError/DataError, as in `records verify --data`); the manifest's dataset is only
    tried: when it is not there or not the recorded one, the accuracy is not available."""
    from pointkd.data import load_split

    num_points = rs.manifest["data"]["num_points"]
    if data is not None:
        ds = load_split(data, "train", num_points=num_points)
        check_made_for(rs, ds, root)
        return ds.labels, str(data), f"{data} (--data)"
    path = rs.manifest["data"].get("path")
    if rs.manifest["data"].get("labels", True) is False:
        return None, None, ("the set was recorded with --unlabelled (its labels are withheld); "
                            "pass --data PATH to score the teacher against them anyway")
    if not isinstance(path, str) or not path:
        return None, None, "the manifest names no dataset path; pass --data PATH"
    try:
        ds = load_split(path, "train", num_points=num_points)
        check_made_for(rs, ds, root)
    except (PointKDError, OSError) as exc:
        reason = " ".join(str(exc).split())
        return None, None, (f"the dataset the manifest names ({path}) cannot be used from "
                            f"here ({reason}); pass --data PATH")
    return ds.labels, path, f"{path} (named by the manifest)"


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _encoding(m: dict) -> str:
    lg = m["logits"]
    text = f"top-{lg['topk']}" if lg["topk"] else lg["encoding"]
    if len(m["teachers"]) > 1:
        text += f", mean of {len(m['teachers'])} teachers" + (
            " (each stored)" if lg["combine"] == "each" else "")
    return text


def record_stats(directory: str | Path, data=None,
                 taus: tuple[float, ...] | list[float] = DEFAULT_TAUS) -> RecordStats:
    """Statistics of the record set at `directory` (module docstring: the definitions).
    `data`: dataset path for the labels (default: the one the manifest names). Bad input
    (no record set, corrupt manifest, incomplete set, wrong --data) is a PointKDError."""
    start = time.perf_counter()
    taus = [float(t) for t in taus]
    if not taus or not all(np.isfinite(t) and t > 0 for t in taus):
        raise ConfigError(f"temperatures must be finite and > 0, got {taus}")
    root = str(directory)
    rs = open_records(root)
    labels, source, note = _labels(rs, root, data)
    n, k, c = rs.num_shapes, rs.k, rs.num_classes
    top_sum, ent_sum = np.zeros(len(taus)), np.zeros(len(taus))
    right, changed = 0, 0
    mix = _MixTally()
    kl = np.empty((k, n))  # one value per row (8 B a row): its median is exact
    per_chunk = max(1, CHUNK_VALUES // (k * c))  # whole shapes: all K views of each
    for a in range(0, n, per_chunk):
        shapes = np.arange(a, min(a + per_chunk, n))
        idx = (np.arange(k)[:, None] * n + shapes[None, :]).ravel()  # (k, sample) order
        batch = rs.rows(idx)
        z = batch.logits.numpy().astype(np.float64).reshape(k, len(shapes), c)
        top1 = z.argmax(axis=-1)  # (K, B); ties: the lower class, as torch's argmax
        if labels is not None:
            right += int((top1 == labels[shapes][None, :]).sum())
        changed += int((top1 != top1[:1]).any(axis=0).sum())
        for i, tau in enumerate(taus):
            logp = _log_softmax(z / tau)
            p = np.exp(logp)
            top_sum[i] += p.max(axis=-1).sum()
            ent_sum[i] -= (p * logp).sum()
            if tau == 1.0:
                lp1, p1 = logp, p
        if 1.0 not in taus:
            lp1 = _log_softmax(z)
            p1 = np.exp(lp1)
        # log m = log((1/K) sum_v p_v), stably: finite even where every view's p underflows
        peak = lp1.max(axis=0, keepdims=True)
        log_m = peak + np.log(np.exp(lp1 - peak).sum(axis=0, keepdims=True)) - np.log(k)
        kl[:, shapes] = np.maximum((p1 * (lp1 - log_m)).sum(axis=-1), 0.0)
        if batch.mix_shapes is not None:
            mix.add(batch.mix_shapes.numpy(), batch.mix_lams.numpy(), p1.reshape(-1, c),
                    None if labels is None else labels[batch.sample], labels)
    rows, m = len(rs), rs.manifest
    spread = k > 1
    return RecordStats(
        records=root, rows=rows, shapes=n, k=k, classes=c, encoding=_encoding(m),
        teachers=len(m["teachers"]), bytes_per_row=rs.dtype.itemsize,
        total_bytes=sum((rs.root / s["file"]).stat().st_size for s in rs.shards),
        shards=len(rs.shards), labels=source, labels_note=note,
        teacher_accuracy=None if labels is None else right / rows,
        rows_right=None if labels is None else right,
        taus=[TauStats(t, float(top_sum[i] / rows), float(ent_sum[i] / rows))
              for i, t in enumerate(taus)],
        uniform_entropy_nats=float(np.log(c)),
        view_kl_mean_nats=float(kl.mean()) if spread else None,
        view_kl_median_nats=float(np.median(kl)) if spread else None,
        top1_change_fraction=changed / n if spread else None,
        top1_change_shapes=changed if spread else None,
        **mix.result(rows), seconds=time.perf_counter() - start)


class _MixTally:
    """Running sums of the mixed-view statistics over chunks of rows."""

    def __init__(self) -> None:
        self.seen = False
        self.mixed = 0
        self.share = 0.0
        self.own = self.partner = 0.0
        self.differ = 0

    def add(self, partners: np.ndarray, lams: np.ndarray, p: np.ndarray,
            own_labels: np.ndarray | None, labels: np.ndarray | None) -> None:
        self.seen = True
        mixed = partners >= 0
        self.mixed += int(mixed.sum())
        self.share += float(lams[mixed].sum())
        if own_labels is not None and labels is not None:
            other = labels[partners.clip(min=0)]
            sel = mixed & (other != own_labels)
            rows = np.nonzero(sel)[0]
            self.own += float(p[rows, own_labels[sel]].sum())
            self.partner += float(p[rows, other[sel]].sum())
            self.differ += len(rows)

    def result(self, rows: int) -> dict:
        if not self.seen:
            return {}
        out = {"mixed_fraction": self.mixed / rows,
               "mixed_mean_share": self.share / max(self.mixed, 1)}
        if self.differ:
            out.update(mixed_own_class_prob=self.own / self.differ,
                       mixed_partner_class_prob=self.partner / self.differ)
        return out
