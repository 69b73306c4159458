"""The `predict` stage: classify point-cloud files with a checkpoint (`pointkd predict`).

Files are read and normalised exactly as in training (`data.read_cloud` +
`data.normalize_unit_sphere`, the checkpoint's number of points). Prediction is deterministic:
a file with exactly the model's number of points is used as it is, in file order (so a cloud
saved from a dataset gets the very logits `pointkd eval` computes for it); other files are
resampled by a fixed-seed draw (see `data.readers`).

`run(PredictConfig)` returns a `PredictResult` (every file's result; `text()` what the CLI
prints); `iter_predictions` yields each file's result as soon as its batch is done.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pointkd.checkpoint import load_model
from pointkd.config.stages import PredictConfig
from pointkd.data import normalize_unit_sphere, read_cloud
from pointkd.data.readers import MIN_POINTS, POINT_SUFFIXES
from pointkd.device import resolve_device
from pointkd.errors import DataError, PointKDError
from pointkd.metrics import predict_logits, require_finite
from pointkd.progress import track


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


def iter_predictions(
    checkpoint: str, inputs: list[str], topk: int = 3, batch_size: int = 32,
    device: str = "auto", progress: bool = True, min_points: int | None = None,
) -> Iterator[dict]:
    """Top-k classes per file, one result per file as soon as its batch is done:
    {"file", "top": [{"class", "index", "prob"}, ...]}, or {"file", "error"} for a file that
    cannot be read (it does not stop the rest). A point file with fewer than `min_points`
    points (default `MIN_POINTS`, 16) is one of the failures."""
    dev = resolve_device(device)
    model, meta = load_model(checkpoint, dev)
    num_points, names = meta.get("num_points", 1024), meta["class_names"]
    files = expand_inputs(inputs)
    starts = range(0, len(files), batch_size)
    for start in track(starts, len(starts), "predict", unit="batch",
                       enabled=progress and len(files) > batch_size):
        clouds, kept = [], []
        for path in files[start : start + batch_size]:
            try:
                cloud = read_cloud(path, num_points, keep_order=True,
                                   min_points=MIN_POINTS if min_points is None else min_points)
                clouds.append(normalize_unit_sphere(cloud))
                kept.append(path)
            except PointKDError as exc:
                message = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
                yield {"file": str(path), "error": message}
        if not clouds:
            continue
        logits = predict_logits(model, np.stack(clouds), batch_size, dev)
        require_finite(logits, f"checkpoint {checkpoint}", kept)
        probs = torch.softmax(logits, dim=1)
        top_p, top_i = probs.topk(min(topk, probs.shape[1]), dim=1)
        for path, p_row, i_row in zip(kept, top_p.tolist(), top_i.tolist(), strict=True):
            yield {"file": str(path), "top": [{"class": names[i], "index": i, "prob": p}
                                              for p, i in zip(p_row, i_row, strict=True)]}


def predict_files(
    checkpoint: str, inputs: list[str], topk: int = 3, batch_size: int = 32,
    device: str = "auto", progress: bool = True, min_points: int | None = None,
) -> list[dict]:
    """Every result of `iter_predictions`, in input order."""
    return list(iter_predictions(checkpoint, inputs, topk, batch_size, device, progress,
                                 min_points))


def line(result: dict) -> str:
    """One file's prediction as the CLI prints it: `FILE: chair 0.912, sofa 0.041, ...`."""
    return f"{result['file']}: " + ", ".join(f"{t['class']} {t['prob']:.3f}"
                                            for t in result["top"])


@dataclass(frozen=True)
class PredictResult:
    """Every file's result of `run`, in input order ({"file", "top"} or {"file", "error"})."""

    predictions: list[dict]
    as_json: bool = False

    @property
    def failed(self) -> int:
        """Files that could not be classified."""
        return sum("error" in r for r in self.predictions)

    def text(self) -> str:
        """All results as JSON (`--json`), else a line per classified file."""
        if self.as_json:
            return json.dumps(self.predictions, indent=1)
        return "\n".join(line(r) for r in self.predictions if "error" not in r)


def run(cfg: PredictConfig, on_result: Callable[[dict], None] | None = None) -> PredictResult:
    """`pointkd predict`: classify `cfg.files`; `on_result(r)` sees each file's result as soon
    as its batch is done (a bad file's too: it does not stop the rest)."""
    cfg.check()
    results = []
    for r in iter_predictions(cfg.checkpoint, cfg.files, topk=cfg.topk,
                              batch_size=cfg.batch_size, device=cfg.device,
                              progress=cfg.progress, min_points=cfg.min_points):
        results.append(r)
        if on_result is not None:
            on_result(r)
    return PredictResult(results, as_json=cfg.json)
