"""`manifest.json`: what a record set's rows mean and what they were made from.

The manifest is written when a recording starts (`complete: false`, no shard checksums) and
rewritten when it ends (`complete: true`); both writes are atomic (temp + fsync + rename).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from pointkd import safe_io
from pointkd.config.types import AugmentSpec
from pointkd.errors import RecordError
from pointkd.records.format import FORMAT, FORMAT_VERSION, dtype_descr, row_dtype

MANIFEST = "manifest.json"
REQUIRED = ("data", "teachers", "augment", "k", "seed", "batch_size", "logits", "row_dtype",
            "bytes_per_row", "total_rows", "shards", "complete")
# settings that make two recordings the same recording (what `--resume` must match)
SAME_RECORDING = ("format_version", "augment", "k", "seed", "batch_size", "logits",
                  "row_dtype", "total_rows")


def shard_name(rank: int) -> str:
    """File of the shard written by process `rank` (one writer per shard)."""
    return f"shard-{rank:05d}.bin"


def write_json_atomic(path: Path, value: dict) -> None:
    """temp + fsync + rename, never through a link; a full disk is a one-line error."""
    safe_io.write_json(path, value)


def read_manifest(root: str | Path) -> dict:
    """Parse and sanity-check a manifest (complete or not); any problem is a RecordError."""
    root = Path(root)
    if not root.is_dir():
        raise RecordError(f"record set not found: {root}")
    path = root / MANIFEST
    if not path.is_file():
        raise RecordError(f"{root}: no {MANIFEST} (not a record set, or its recording never "
                          "started)")
    try:
        m = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise RecordError(f"{path}: unreadable or not valid JSON") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise RecordError(f"{path}: not a pointkd record manifest")
    if m.get("format_version") != FORMAT_VERSION:
        raise RecordError(f"{path}: record format version {m.get('format_version')} is not "
                          f"supported (this pointkd reads version {FORMAT_VERSION})")
    missing = [key for key in REQUIRED if key not in m]
    if missing:
        raise RecordError(f"{path}: manifest lacks {', '.join(missing)}")
    problem = schema_problem(m)
    if problem:
        raise RecordError(f"{path}: bad manifest: {problem}")
    AugmentSpec.from_dict(m["augment"])  # unknown spec version / keys
    dtype = manifest_dtype(m)
    if dtype_descr(dtype) != m["row_dtype"] or dtype.itemsize != m["bytes_per_row"]:
        raise RecordError(f"{path}: row layout does not match its logits encoding")
    return m


SHARD_FILE = re.compile(r"shard-\d{5,}\.bin")  # what `shard_name` writes; nothing else


def schema_problem(m: dict) -> str | None:
    """Types and ranges of every manifest field pointkd reads (numbers must be JSON numbers,
    not strings), and shard names that are plain files of the set; None if all is well."""
    ints = [(m, "k", 1), (m, "seed", 0), (m, "batch_size", 1), (m, "total_rows", 0),
            (m, "bytes_per_row", 1)]
    sections = {"data": m["data"], "logits": m["logits"]}
    for name, section in sections.items():
        if not isinstance(section, dict):
            return f"'{name}' must be a mapping"
    d, lg = m["data"], m["logits"]
    ints += [(d, "num_shapes", 1), (d, "num_classes", 2), (d, "num_points", 1),
             (lg, "topk", 0), (lg, "stored_teachers", 1)]
    for section, key, low in ints:
        value = section.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            return f"'{key}' must be an integer >= {low}, got {value!r}"
    if not isinstance(m["complete"], bool):
        return f"'complete' must be true or false, got {m['complete']!r}"
    if not isinstance(d.get("fingerprint"), str) or not isinstance(d.get("name"), str):
        return "'data' needs its name and fingerprint as strings"
    names = d.get("class_names")
    if names is not None and (not isinstance(names, list) or len(names) != d["num_classes"]
                              or not all(isinstance(n, str) for n in names)):
        return f"'data.class_names' must list {d['num_classes']} names"
    if lg.get("combine") not in ("mean", "each"):
        return f"'logits.combine' must be mean or each, got {lg.get('combine')!r}"
    if "votes" in lg and not _votes_ok(lg):
        return ("'logits.votes' must be an integer >= 1 with 'logits.vote_scale' [low, high], "
                f"got {lg.get('votes')!r}, {lg.get('vote_scale')!r}")
    teachers = m["teachers"]
    if not isinstance(teachers, list) or not teachers or not all(
            isinstance(t, dict) and isinstance(t.get("sha256"), str)
            and isinstance(t.get("model"), str) and isinstance(t.get("file"), str)
            for t in teachers):
        return "'teachers' must list each teacher's file, model and sha256"
    return _shards_problem(m["shards"], m["complete"])


def _votes_ok(lg: dict) -> bool:
    votes, scale = lg.get("votes"), lg.get("vote_scale")
    return (isinstance(votes, int) and not isinstance(votes, bool) and votes >= 1
            and isinstance(scale, list) and len(scale) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scale))


def _shards_problem(shards: object, complete: bool) -> str | None:
    if not isinstance(shards, list) or not shards:
        return "'shards' must be a non-empty list"
    files = []
    for s in shards:
        if not isinstance(s, dict):
            return "every shard must be a mapping"
        name = s.get("file")
        if not isinstance(name, str) or not SHARD_FILE.fullmatch(name):
            return (f"shard file {name!r} is not a plain shard name inside the set "
                    "(shard-NNNNN.bin)")
        files.append(name)
        for key in ("row_start", "rows"):
            value = s.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                return f"shard {name}: '{key}' must be an integer >= 0, got {value!r}"
        checksum = s.get("sha256")
        if not (isinstance(checksum, str) or (checksum is None and not complete)):
            return f"shard {name}: 'sha256' must be a checksum string"
    twice = sorted({f for f in files if files.count(f) > 1})
    if twice:
        return f"shards overlap: two of them name the same file {twice[0]}"
    return None


def manifest_dtype(m: dict) -> np.dtype:
    lg = m["logits"]
    try:
        mixed = m["augment"].get("mix", "none") != "none"
        return row_dtype(int(m["data"]["num_classes"]), lg["encoding"], int(lg["topk"]),
                         int(lg["stored_teachers"]), mixed=mixed)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise RecordError("manifest: malformed data/logits section") from None


def check_shard_ranges(m: dict, root: str | Path) -> None:
    """Shards must tile [0, total_rows) without gap or overlap, and total = K x shapes."""
    expected = int(m["k"]) * int(m["data"]["num_shapes"])
    if m["total_rows"] != expected:
        raise RecordError(f"{root}: manifest says {m['total_rows']} rows, but K x shapes = "
                          f"{m['k']} x {m['data']['num_shapes']} = {expected}")
    cursor = 0
    for start, rows in sorted((int(s["row_start"]), int(s["rows"])) for s in m["shards"]):
        if start != cursor:
            what = "overlap" if start < cursor else "leave a gap"
            raise RecordError(f"{root}: shard row ranges {what} at row {min(start, cursor)}")
        cursor += rows
    if cursor != expected:
        raise RecordError(f"{root}: shards hold {cursor} rows, expected {expected} "
                          f"(K x shapes)")


def changed_settings(old: dict, new: dict) -> list[str]:
    """Names of the settings in which two manifests describe different recordings."""
    names = [key for key in SAME_RECORDING if old.get(key) != new.get(key)]
    # the same data and teachers by content; the paths they were given by may differ
    if old.get("data", {}).get("fingerprint") != new["data"]["fingerprint"]:
        names.insert(0, "data")
    if [(t.get("sha256"), t.get("source_sha256")) for t in old.get("teachers", [])] != [
            (t["sha256"], t.get("source_sha256")) for t in new["teachers"]]:
        names.insert(0, "teachers")
    layout = [[(s.get("file"), s.get("row_start"), s.get("rows")) for s in m.get("shards", [])]
              for m in (old, new)]
    if layout[0] != layout[1]:
        names.append("shards (number of processes)")
    return names
