"""The `records verify` stage: re-check a record set against its manifest, and optionally
against the dataset, the teachers and the augmentation it must have been made with.
(`records info` and `records stats` read the store alone: `pointkd.records`.)
"""

from __future__ import annotations

from pathlib import Path

from pointkd.checkpoint import read_checkpoint
from pointkd.config.run import augment_spec
from pointkd.errors import PointKDError, RecordError
from pointkd.records.reader import open_records
from pointkd.safe_io import file_sha256
from pointkd.teachers.load import class_map, teacher_identity, teacher_kind


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
