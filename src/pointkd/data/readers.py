"""Single point-cloud files -> (num_points, 3) float32 (not normalised).

- .npy: (P, >=3) array; .xyz/.txt: whitespace- or comma-separated rows, first 3 columns used
  (extra columns such as normals are ignored);
- .pcd: ASCII or binary (uncompressed) PCD, fields x y z located by name;
- .ply: a point cloud (vertices only) or a mesh; .off: a mesh (both parsed with trimesh).

Meshes are sampled on their surface, area-weighted, deterministic from `seed`. Point files
with more than `num_points` points are subsampled without replacement by a seeded random
choice; files with fewer are resampled *with* replacement to `num_points` (all original
points kept, the rest drawn at random). A point file needs at least min(`min_points`,
`num_points`) points (`MIN_POINTS` = 16 by default, `predict --min-points`): fewer carry no
shape, and resampling them would only fake a cloud. Coordinates must be finite and within
float32 range (|x| <= 3.4e38), headers must agree with the data they announce, and mesh faces
need >= 3 vertices that all exist. The result is always in seeded random order, as
ModelNet40's HDF5 clouds are (students take the first M points as a uniform subsample) —
except with `keep_order=True` (`pointkd predict`): a file with exactly `num_points` points is
returned as it is, a larger one keeps a seeded random subset in file order, a smaller one all
its points in file order followed by seeded repeats, so a cloud saved from a dataset is
classified exactly as `pointkd eval` sees it.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from pointkd.errors import DataError

POINT_SUFFIXES = (".npy", ".xyz", ".txt", ".pcd", ".ply", ".off")
MIN_POINTS = 16  # fewest points a point file may have (unless fewer are asked for)
_F32_MAX = float(np.finfo(np.float32).max)


def file_seed(path: str | Path) -> int:
    """A stable per-file seed (from its name), so folder datasets load identically."""
    return zlib.crc32(str(path).encode())


def read_cloud(path: str | Path, num_points: int = 1024, seed: int = 0,
               min_points: int = MIN_POINTS, keep_order: bool = False) -> np.ndarray:
    """One file -> (num_points, 3) float32 in its own units (not normalised); see the module
    docstring for formats, sampling and `min_points`. Same (file, num_points, seed) -> same
    array."""
    path = Path(path)
    if num_points < 1:
        raise DataError(f"{path}: num_points must be >= 1, got {num_points}")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file")
    suffix = path.suffix.lower()
    rng = np.random.default_rng(seed)
    if suffix in (".ply", ".off"):
        points = _read_mesh_or_cloud(path, num_points, rng)
    elif suffix == ".npy":
        points = _read_npy(path)
    elif suffix in (".xyz", ".txt"):
        points = _read_text(path)
    elif suffix == ".pcd":
        points = _read_pcd(path)
    else:
        raise DataError(f"{path}: unknown point-cloud format '{suffix}' "
                        f"(known: {' '.join(POINT_SUFFIXES)})")
    if len(points) == 0:
        raise DataError(f"{path}: no points")
    if not np.isfinite(points).all():
        raise DataError(f"{path}: NaN/Inf coordinates")
    if np.abs(points).max() > _F32_MAX:  # finite in float64, but inf once cast to float32
        raise DataError(f"{path}: coordinates beyond float32 range (|x| > {_F32_MAX:.3g})")
    needed = min(min_points, num_points)
    if len(points) < needed:
        raise DataError(f"{path}: {len(points)} point(s), fewer than the minimum {needed} "
                        "(see --min-points)")
    if keep_order:
        return _resample_in_order(points.astype(np.float32), num_points, rng)
    return _resample(points.astype(np.float32), num_points, rng)


def _brief(exc: BaseException) -> str:
    """An exception as a short single line (error messages must stay one line)."""
    text = " ".join(str(exc).split())[:80]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _resample(points: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if len(points) >= n:
        idx = rng.choice(len(points), n, replace=False)
    else:
        idx = rng.permutation(np.concatenate([np.arange(len(points)),
                                              rng.integers(0, len(points), n - len(points))]))
    return np.ascontiguousarray(points[idx])


def _resample_in_order(points: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if len(points) == n:
        return np.ascontiguousarray(points)
    if len(points) > n:
        idx = np.sort(rng.choice(len(points), n, replace=False))
    else:
        idx = np.concatenate([np.arange(len(points)),
                              rng.integers(0, len(points), n - len(points))])
    return np.ascontiguousarray(points[idx])


def _columns(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim != 2 or array.shape[1] < 3:
        raise DataError(f"{path}: expected rows of at least 3 coordinates, got shape "
                        f"{array.shape}")
    return array[:, :3]


def _read_npy(path: Path) -> np.ndarray:
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":  # numpy would blame "pickled data" for any bad header
            raise DataError(f"{path}: not a .npy file (bad magic bytes)")
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as exc:  # a malformed header fails deep in numpy (even TokenError)
        raise DataError(f"{path}: not a readable numeric .npy file ({_brief(exc)})") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "iuf":
        kind = getattr(array, "dtype", type(array).__name__)
        raise DataError(f"{path}: .npy must hold real numbers (int or float), not {kind}")
    return _columns(array.astype(np.float64), path)


def _read_text(path: Path) -> np.ndarray:
    """Rows of >= 3 numbers separated by whitespace or commas; '#' comments and one
    non-numeric header line (e.g. "x y z nx ny nz") are skipped."""
    try:
        lines = path.read_text().replace(",", " ").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a text file ({type(exc).__name__})") from None
    rows = [line.split() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    coords = []
    for i, row in enumerate(rows):
        try:
            if len(row) < 3:
                raise ValueError("fewer than 3 values")
            coords.append((float(row[0]), float(row[1]), float(row[2])))
        except ValueError as exc:
            if i == 0:  # a header line
                continue
            raise DataError(f"{path}: cannot parse row {i + 1} as coordinates ({exc})") from None
    return np.array(coords, dtype=np.float64).reshape(-1, 3)


_PCD_TYPES = {("F", 4): "f4", ("F", 8): "f8", ("U", 1): "u1", ("U", 2): "u2", ("U", 4): "u4",
              ("I", 1): "i1", ("I", 2): "i2", ("I", 4): "i4", ("U", 8): "u8", ("I", 8): "i8"}


def _read_pcd(path: Path) -> np.ndarray:
    """ASCII or binary PCD (v0.7 header); fields x, y, z found by name (others ignored)."""
    raw = path.read_bytes()
    header: dict[str, list[str]] = {}
    offset = 0
    while offset < len(raw) and "DATA" not in header:  # the header ends with its DATA line
        end = raw.find(b"\n", offset)
        end = len(raw) if end < 0 else end
        parts = raw[offset:end].decode("ascii", "replace").split()
        offset = end + 1
        if parts and not parts[0].startswith("#"):
            header[parts[0].upper()] = parts[1:]
    try:
        names = header["FIELDS"]
        sizes = [int(s) for s in header["SIZE"]]
        types = header["TYPE"]
        counts = [int(c) for c in header.get("COUNT", ["1"] * len(names))]
        n = int(header["POINTS"][0])
        mode = header["DATA"][0].lower()
        cols = [names.index(a) for a in "xyz"]
    except (KeyError, ValueError, IndexError):
        raise DataError(f"{path}: malformed PCD header (need FIELDS x y z, SIZE, TYPE, "
                        f"POINTS, DATA)") from None
    if n < 0 or len(sizes) != len(names) or len(types) != len(names) or len(counts) != len(names):
        raise DataError(f"{path}: inconsistent PCD header (FIELDS/SIZE/TYPE/COUNT/POINTS)")
    if min(counts, default=1) < 1:
        raise DataError(f"{path}: PCD COUNT values must be >= 1")
    try:
        size = int(header["WIDTH"][0]) * int(header["HEIGHT"][0])
    except (KeyError, ValueError, IndexError):
        size = n  # WIDTH/HEIGHT are optional here; POINTS says how many
    if size != n:
        raise DataError(f"{path}: PCD WIDTH x HEIGHT = {size} but POINTS = {n}")
    starts = np.cumsum([0] + counts[:-1])  # first column of every field
    if mode == "ascii":
        try:
            values = np.array(raw[offset:].decode("ascii", "replace").split(), dtype=np.float64)
        except ValueError:
            raise DataError(f"{path}: PCD ascii data has a non-numeric value") from None
        width = sum(counts)
        if values.size != n * width:
            raise DataError(f"{path}: PCD header announces {n} points x {width} values, the "
                            f"data has {values.size} values")
        table = values[: n * width].reshape(n, width)
        return table[:, [starts[c] for c in cols]]
    if mode != "binary":
        raise DataError(f"{path}: PCD DATA '{mode}' not supported (ascii or binary)")
    try:  # positional names: PCD allows repeated padding fields called "_"
        dtype = np.dtype([(f"f{i}", _PCD_TYPES[(t.upper(), int(s))], (c,)) for i, (t, s, c)
                          in enumerate(zip(types, sizes, counts, strict=True))])
    except KeyError:
        raise DataError(f"{path}: unsupported PCD field type") from None
    if len(raw) - offset != n * dtype.itemsize:
        raise DataError(f"{path}: PCD header announces {n} points ({n * dtype.itemsize} "
                        f"bytes), the binary data has {len(raw) - offset} bytes")
    table = np.frombuffer(raw, dtype=dtype, count=n, offset=offset)
    return np.stack([table[f"f{c}"][:, 0].astype(np.float64) for c in cols], axis=1)


def _read_mesh_or_cloud(path: Path, n: int, rng: np.random.Generator) -> np.ndarray:
    import trimesh

    _check_mesh_header(path)
    try:
        obj = trimesh.load(path, file_type=path.suffix[1:].lower(), process=False, force=None)
    except Exception as exc:  # trimesh raises many types for malformed files
        raise DataError(f"{path}: unreadable mesh/point file ({_brief(exc)})") from None
    if isinstance(obj, trimesh.Scene):
        geoms = list(obj.geometry.values())
        if not geoms:
            raise DataError(f"{path}: no geometry")
        obj = trimesh.util.concatenate(geoms)
    faces = getattr(obj, "faces", None)
    if faces is not None and len(faces) > 0:
        vertices = np.asarray(obj.vertices, np.float64)
        if not np.isfinite(vertices).all():
            raise DataError(f"{path}: NaN/Inf coordinates")
        if np.abs(vertices).max(initial=0.0) > _F32_MAX:
            raise DataError(f"{path}: coordinates beyond float32 range (|x| > {_F32_MAX:.3g})")
        faces = np.asarray(faces)
        if faces.min() < 0 or faces.max() >= len(vertices):
            bad = int(faces.min()) if faces.min() < 0 else int(faces.max())
            raise DataError(f"{path}: face index {bad} outside the {len(vertices)} vertices")
        try:
            return sample_surface(vertices, np.asarray(faces), n, rng)
        except (ValueError, IndexError) as exc:  # zero area, faces pointing past the vertices
            raise DataError(f"{path}: bad mesh ({exc})") from None
    vertices = np.asarray(getattr(obj, "vertices", np.empty((0, 3))), dtype=np.float64)
    return vertices.reshape(-1, 3)


def _check_mesh_header(path: Path) -> None:
    """The counts in an OFF or PLY header must match the data (trimesh silently reads
    what it finds), and OFF faces need >= 3 existing vertices."""
    raw = path.read_bytes()
    if path.suffix.lower() == ".off":
        _check_off(raw.decode("utf-8", "replace"), path)
    elif raw[:3].lower() == b"ply":
        _check_ply(raw, path)


def _ints(tokens: list[str], path: Path, what: str) -> list[int]:
    try:
        return [int(t) for t in tokens]
    except ValueError:
        raise DataError(f"{path}: {what} must be integers, got {' '.join(tokens)}") from None


def _check_off(text: str, path: Path) -> None:
    lines = [line.split("#")[0].strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines or not lines[0].upper().startswith("OFF"):
        raise DataError(f"{path}: not an OFF file (no OFF header)")
    counts, data = lines[0][3:].split(), lines[1:]  # counts may follow OFF on its line
    if not counts and data:
        counts, data = data[0].split(), data[1:]
    if len(counts) < 2:
        raise DataError(f"{path}: OFF header lacks its vertex and face counts")
    nv, nf = _ints(counts[:2], path, "OFF vertex/face counts")
    if nv < 0 or nf < 0:
        raise DataError(f"{path}: OFF header has negative counts ({nv} vertices, {nf} faces)")
    if len(data) != nv + nf:
        raise DataError(f"{path}: OFF header announces {nv} vertices and {nf} faces "
                        f"({nv + nf} lines), the file has {len(data)} data lines")
    for number, line in enumerate(data[nv:], 1):
        parts = line.split()
        size = _ints(parts[:1], path, "OFF face sizes")[0]
        idx = _ints(parts[1:1 + size], path, "OFF face indices")
        if size < 3 or len(idx) < size:
            raise DataError(f"{path}: face {number} has {min(size, len(idx))} vertices "
                            "(a face needs >= 3)")
        if min(idx) < 0 or max(idx) >= nv:
            raise DataError(f"{path}: face {number} refers to a vertex outside 0..{nv - 1}")


_PLY_SIZES = {"char": 1, "uchar": 1, "int8": 1, "uint8": 1, "short": 2, "ushort": 2,
              "int16": 2, "uint16": 2, "int": 4, "uint": 4, "int32": 4, "uint32": 4,
              "float": 4, "float32": 4, "double": 8, "float64": 8}


def _check_ply(raw: bytes, path: Path) -> None:
    """Element counts vs data: ascii files line by line, binary files without list
    properties (point clouds) by size. Binary meshes are left to trimesh's parser."""
    end = raw.find(b"end_header")
    if end < 0:
        raise DataError(f"{path}: PLY header has no end_header")
    newline = raw.find(b"\n", end)
    header = raw[:end].decode("ascii", "replace").splitlines()
    body = raw[newline + 1:] if newline >= 0 else b""
    fmt, elements = "", []  # [name, count, bytes per row (None: has a list property)]
    for line in header:
        parts = line.split()
        if parts[:1] == ["format"] and len(parts) > 1:
            fmt = parts[1]
        elif parts[:1] == ["element"] and len(parts) == 3:
            count = _ints(parts[2:], path, "PLY element counts")[0]
            if count < 0:
                raise DataError(f"{path}: PLY element {parts[1]} has negative count {count}")
            elements.append([parts[1], count, 0])
        elif parts[:1] == ["property"] and len(parts) > 1 and elements:
            size = None if parts[1] == "list" else _PLY_SIZES.get(parts[1])
            row = elements[-1][2]
            elements[-1][2] = None if row is None or size is None else row + size
    if fmt == "ascii":
        rows = [line for line in body.decode("utf-8", "replace").splitlines() if line.strip()]
        total = sum(count for _, count, _ in elements)
        if len(rows) != total:
            counts = ", ".join(f"{c} {n}" for n, c, _ in elements)
            raise DataError(f"{path}: PLY header announces {total} rows ({counts}), the file "
                            f"has {len(rows)}")
    elif elements and all(size for _, _, size in elements):
        expected = sum(count * size for _, count, size in elements)
        if len(body) != expected:
            raise DataError(f"{path}: PLY header announces {expected} bytes of data, the file "
                            f"has {len(body)}")


def sample_surface(vertices: np.ndarray, faces: np.ndarray, n: int,
                   rng: np.random.Generator) -> np.ndarray:
    """n points uniformly on the surface: faces chosen by area, then uniform barycentrics."""
    tri = vertices[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    if not np.isfinite(area).all() or area.sum() <= 0:
        raise ValueError("mesh has zero surface area")
    face = rng.choice(len(faces), n, p=area / area.sum())
    u, v = rng.random(n), rng.random(n)
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    a, b, c = tri[face, 0], tri[face, 1], tri[face, 2]
    return a + u[:, None] * (b - a) + v[:, None] * (c - a)
