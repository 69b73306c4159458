"""`pointkd records verify` and `pointkd records info`."""

from __future__ import annotations

from pathlib import Path

from pointkd.checkpoint import file_sha256, read_checkpoint
from pointkd.config import augment_spec
from pointkd.errors import PointKDError, RecordError
from pointkd.records.format import CLOUD_BYTES
from pointkd.records.manifest import read_manifest
from pointkd.records.reader import open_records
from pointkd.teacher import class_map, teacher_identity, teacher_kind


def verify(root: str, data: str | None = None, teachers: list[str] | None = None,
           config: str | None = None, weights: list[str] | None = None) -> str:
    """Re-check everything the manifest promises; the first problem is a one-line RecordError.

    Always: manifest, spec version/keys, completeness, shard ranges, sizes and sha256.
    Optionally: that the records were made for dataset `data`, with every teacher in
    `teachers` (checkpoint, ONNX file, or `module:factory` whose k-th `weights` file and
    source file must hash as recorded), and with the augmentation of config `config`.
    Returns an OK summary."""
    rs = open_records(root)  # manifest, spec, completeness, ranges, shard presence and sizes
    m = rs.manifest
    for s in rs.shards:
        if file_sha256(rs.root / s["file"]) != s["sha256"]:
            raise RecordError(f"{root}: checksum mismatch in {s['file']} (the shard is "
                              "corrupted)")
    checked = ["checksums match"]
    if data is not None:
        from pointkd.data import load_split

        open_records(root, data=load_split(data, "train", num_points=m["data"]["num_points"]))
        checked.append(f"made for {data}")
    checked += _check_teachers(root, m["teachers"], teachers or [], weights or [],
                               m["data"]["class_names"])
    if config is not None:
        want = augment_spec(config)
        if want != rs.spec:
            diff = [f"{k}={v}" for k, v in want.to_dict().items() if rs.spec.to_dict()[k] != v]
            raise RecordError(f"{root}: records were made with another augmentation spec than "
                              f"{config} (it has {', '.join(diff)})")
        checked.append(f"augmentation matches {Path(config).name}")
    return (f"OK: {root}: {len(rs)} rows = K {rs.k} x {rs.num_shapes} shapes in "
            f"{len(rs.shards)} shard(s); " + ", ".join(checked))


def _check_teachers(root: str, recorded: list[dict], teachers: list[str],
                    weights: list[str], data_names: list[str]) -> list[str]:
    """Every given teacher's hashes must be among the manifest's teachers, recorded with
    the class mapping its names give for the data's classes."""
    kinds = [teacher_kind(t) for t in teachers]
    if len(weights) != kinds.count("module"):
        raise RecordError(f"{kinds.count('module')} module teacher(s) but {len(weights)} "
                          "--weights file(s)")
    checked, w = [], iter(weights)
    for t, kind in zip(teachers, kinds, strict=True):
        try:
            ident = teacher_identity(t, next(w) if kind == "module" else None)
        except PointKDError as exc:
            raise RecordError(f"{root}: {exc}") from None
        same = [x for x in recorded if x.get("sha256") == ident["sha256"]]
        what = "its weights' sha256" if kind == "module" else "its sha256"
        if not same:
            raise RecordError(f"{root}: records were not made with teacher {t} ({what} is "
                              "not in the manifest)")
        if kind == "module" and not any(x.get("source_sha256") == ident["source_sha256"]
                                        for x in same):
            raise RecordError(f"{root}: teacher {t}: the weights match, but the source file "
                              "defining the factory changed since the recording (sha256)")
        _check_class_map(root, t, kind, same, data_names)
        checked.append(f"made with {t if kind == 'module' else Path(t).name}")
    return checked


def _check_class_map(root: str, spec: str, kind: str, same: list[dict],
                     data_names: list[str]) -> None:
    """The manifest's `class_map` (absent: the identity) must be what matching the teacher's
    class names to the data's gives now: otherwise the stored logits sit under other classes
    than a student reading them assumes."""
    want = None
    for entry in same:
        names = _teacher_names(root, spec, kind, entry)
        if names is None:  # matched by count at recording: the identity
            want = list(range(len(data_names)))
        else:
            try:
                want = class_map(spec, names, data_names, "the records' data")
            except PointKDError as exc:
                raise RecordError(f"{root}: {exc}") from None
        if entry.get("class_map", list(range(len(data_names)))) == want or (
                _permuted_before_class_map(kind, entry, want)):
            return
    got = same[0].get("class_map", "the identity")
    raise RecordError(f"{root}: teacher {spec}: the manifest maps its classes to the data's as "
                      f"{got}, but their names give {want}")


def _permuted_before_class_map(kind: str, entry: dict, want: list[int]) -> bool:
    """Manifests written before `class_map` existed reordered foreign teachers' outputs by
    name without noting it (their names are in the entry): a permutation, never a subset."""
    return kind != "pointkd" and "class_map" not in entry and sorted(want) == list(
        range(len(entry.get("class_names") or [])))


def _teacher_names(root: str, spec: str, kind: str, entry: dict) -> list[str] | None:
    """A teacher's class names: from its checkpoint (whose sha256 matched), else as the
    manifest noted them for foreign teachers (ONNX metadata or --class-names)."""
    if kind != "pointkd":
        return entry.get("class_names")
    try:
        names = read_checkpoint(spec).get("class_names")
    except PointKDError as exc:
        raise RecordError(f"{root}: {exc}") from None
    return list(names) if names else None


def teacher_label(t: dict) -> str:
    """How `info` names a manifest teacher entry (entries without `kind` are pointkd's)."""
    kind = t.get("kind", "pointkd")
    if kind == "module":
        return f"{t['entry']} (module, weights {t['file']}, sha256 {t['sha256'][:12]}…)"
    if kind == "onnx":
        return f"{t['file']} (onnx, sha256 {t['sha256'][:12]}…)"
    return f"{t['model']} ({t['file']}, sha256 {t['sha256'][:12]}…)"


def info(root: str) -> str:
    """A human-readable summary of a record set (complete or still being recorded)."""
    m = read_manifest(root)
    root_path, per_row, total = Path(root), m["bytes_per_row"], m["total_rows"]
    size, written = 0, 0
    for s in m["shards"]:
        for name in (s["file"], s["file"] + ".partial"):
            if (root_path / name).is_file():
                size += (root_path / name).stat().st_size
                written += min((root_path / name).stat().st_size // per_row, s["rows"])
    lg, d = m["logits"], m["data"]
    encoding = f"top-{lg['topk']} (fp16 values + tail log-sum-exp)" if lg["topk"] else \
        lg["encoding"]
    if len(m["teachers"]) > 1:
        encoding += f", {len(m['teachers'])} teachers: " + (
            "each stored" if lg["combine"] == "each" else "mean stored")
    if lg.get("votes"):
        low, high = lg["vote_scale"]
        encoding += (f", each teacher voted: mean over the replayed cloud and {lg['votes']} "
                     f"views scaled by U({low}, {high}) per axis")
    status = "complete" if m["complete"] else f"INCOMPLETE: {written} of {total} rows written " \
        "(continue with `pointkd record ... --resume`)"
    spec = ", ".join(f"{k}={v}" for k, v in m["augment"].items())
    lines = [
        f"record set {root} ({status})",
        f"  rows        {total:,} = K {m['k']} x {d['num_shapes']:,} shapes (seed {m['seed']})",
        f"  data        {d['name']}: {d['num_classes']} classes, {d['num_points']} points, "
        f"{d['fingerprint'][:19]}…",
        *(["  labels      withheld: students get the KD terms only on these rows"]
          if d.get("labels", True) is False else []),
        f"  row         {per_row} B per augmented sample vs {CLOUD_BYTES:,} B for a stored "
        f"1,024-point float32 cloud ({CLOUD_BYTES / per_row:.0f}x smaller)",
        f"  size        {size / 1e6:.2f} MB in {len(m['shards'])} shard(s)",
        f"  logits      {encoding}",
    ]
    lines += [f"  teacher     {teacher_label(t)}" for t in m["teachers"]]
    lines.append(f"  augment     {spec}")
    return "\n".join(lines)
