"""Ship a model: `pointkd predict` on point-cloud files and `pointkd export --onnx`.

Files are read and normalised exactly as in training (`data.read_cloud` +
`data.normalize_unit_sphere`, the checkpoint's number of points). ONNX export uses a dynamic
batch axis and is checked against PyTorch with onnxruntime on real clouds.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from pointkd.checkpoint import load_model, resolve_device
from pointkd.data import normalize_unit_sphere, read_cloud
from pointkd.data.readers import MIN_POINTS
from pointkd.errors import DataError, ModelError, PointKDError
from pointkd.evaluate import predict_logits

POINT_SUFFIXES = {".npy", ".xyz", ".txt", ".pcd", ".ply", ".off"}


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files, folders (searched recursively for point-cloud files) and glob patterns."""
    files: list[Path] = []
    for item in inputs:
        matches = sorted(glob.glob(item, recursive=True)) if any(c in item for c in "*?[") else [
            item]
        if not matches:
            raise DataError(f"no files match {item}")
        for m in map(Path, matches):
            if m.is_dir():
                files += sorted(p for p in m.rglob("*") if p.suffix.lower() in POINT_SUFFIXES)
            else:
                files.append(m)
    if not files:
        raise DataError("no point-cloud files found in " + " ".join(inputs))
    return files


def predict_files(
    checkpoint: str, inputs: list[str], topk: int = 3, batch_size: int = 32,
    device: str = "auto", as_json: bool = False, progress: bool = True,
    min_points: int | None = None,
) -> int:
    """Print top-k classes per file; bad files get a one-line error and do not stop the rest.

    A point file with fewer than `min_points` points (default `MIN_POINTS`, 16) is one of the
    failures. Returns the exit code: 0 if every file was predicted, 1 if some failed."""
    dev = resolve_device(device)
    model, meta = load_model(checkpoint, dev)
    num_points, names = meta.get("num_points", 1024), meta["class_names"]
    files = expand_inputs(inputs)
    results, failed = [], 0
    iterator = range(0, len(files), batch_size)
    if progress and len(files) > batch_size:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="predict", unit="batch", file=sys.stderr)
    for start in iterator:
        clouds, kept = [], []
        for path in files[start : start + batch_size]:
            try:
                cloud = read_cloud(path, num_points,
                                   min_points=MIN_POINTS if min_points is None else min_points)
                clouds.append(normalize_unit_sphere(cloud))
                kept.append(path)
            except PointKDError as exc:
                failed += 1
                message = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
                print(f"pointkd: error: {message}", file=sys.stderr)
                results.append({"file": str(path), "error": message})
        if not clouds:
            continue
        logits = predict_logits(model, np.stack(clouds), batch_size, dev)
        require_finite(logits, f"checkpoint {checkpoint}", kept)
        probs = torch.softmax(logits, dim=1)
        top_p, top_i = probs.topk(min(topk, probs.shape[1]), dim=1)
        for path, p_row, i_row in zip(kept, top_p.tolist(), top_i.tolist(), strict=True):
            top = [{"class": names[i], "index": i, "prob": p} for p, i in zip(p_row, i_row,
                                                                               strict=True)]
            results.append({"file": str(path), "top": top})
            if not as_json:
                print(f"{path}: " + ", ".join(f"{t['class']} {t['prob']:.3f}" for t in top))
    if as_json:
        print(json.dumps(results, indent=1))
    return 1 if failed else 0


def require_finite(logits: torch.Tensor | np.ndarray, source: str,
                   files: list | None = None) -> None:
    """Refuse to report NaN/Inf outputs: a one-line ModelError naming `source` (and the
    first input file that produced one)."""
    bad = ~np.isfinite(np.asarray(logits)).reshape(len(logits), -1).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        where = f" for {files[first]}" if files else f" (input {first})"
        raise ModelError(f"{source} produced non-finite outputs (NaN/Inf){where}; nothing "
                         "reported")


def export_onnx(checkpoint: str, out: str, opset: int = 18, check_data: str | None = None,
                check_count: int = 256) -> dict:
    """Export with a dynamic batch axis; with `check_data`, compare onnxruntime to PyTorch."""
    model, meta = load_model(checkpoint, "cpu")
    num_points = meta.get("num_points", 1024)
    example = torch.rand(2, num_points, 3) * 2 - 1
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _native_output_silenced():
            torch.onnx.export(
                model, (example,), str(out_path), input_names=["points"],
                output_names=["logits"], dynamic_axes={"points": {0: "batch"},
                                                       "logits": {0: "batch"}},
                opset_version=opset, dynamo=False,
            )
    except Exception as exc:  # unsupported op in a model family
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"model '{meta['model']}' cannot be exported to ONNX: {first}") from None
    _add_metadata(out_path, meta)
    report = {"onnx": str(out_path), "model": meta["model"], "opset": opset,
              "bytes": out_path.stat().st_size}
    if check_data:
        from pointkd.data import load_split

        ds = load_split(check_data, "test", num_points=num_points)
        report["parity"] = check_parity(model, out_path, ds.points[:check_count])
    return report


@contextlib.contextmanager
def _native_output_silenced():
    """Mute file descriptors 1 and 2 (torch's exporter dumps its whole IR graph there from
    C++ when an op is unsupported); pointkd reports the failure as one line instead."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def _add_metadata(path: Path, meta: dict) -> None:
    """Class names (JSON) and the input contract in the ONNX metadata, so that `pointkd
    record --teacher model.onnx` maps classes by name (see `pointkd.teacher`)."""
    import onnx

    model = onnx.load(str(path))
    props = {"class_names": json.dumps(list(meta.get("class_names") or [])),
             "input_normalization": "pointkd", "pointkd_model": meta["model"]}
    if not meta.get("class_names"):
        del props["class_names"]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def check_parity(model: torch.nn.Module, onnx_path: str | Path, points: np.ndarray) -> dict:
    """Max |logit difference| and argmax agreement between PyTorch and onnxruntime."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ref = predict_logits(model, points, 32, "cpu").numpy()
    got = np.concatenate([session.run(None, {"points": points[i : i + 32].astype(np.float32)})[0]
                          for i in range(0, len(points), 32)])
    require_finite(ref, "the PyTorch model")
    require_finite(got, f"the exported {onnx_path}")
    return {"clouds": int(len(points)), "max_abs_diff": float(np.abs(ref - got).max()),
            "argmax_agreement": float((ref.argmax(1) == got.argmax(1)).mean())}
