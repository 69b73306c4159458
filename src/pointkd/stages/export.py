"""The `export` stage: a checkpoint as an ONNX file (`pointkd export --onnx`).

`run(ExportConfig)` refuses a bad output file before any work, exports (`export_onnx`) and
returns an `ExportResult` whose `text()` is what the CLI prints.

ONNX export uses a dynamic batch axis and, where the traced graph runs correctly at other
point counts (checked against PyTorch at half and double the count), a dynamic point axis.
The expected input is written into the model's metadata (`onnx_metadata`), and the export is
checked against PyTorch with onnxruntime on real clouds.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pointkd import rundir, safe_io
from pointkd._version import __version__
from pointkd.checkpoint import load_model
from pointkd.config.limits import choices
from pointkd.config.stages import ExportConfig, ExportSampler
from pointkd.data import normalize_unit_sphere
from pointkd.device import resolve_device
from pointkd.errors import ModelError
from pointkd.metrics import predict_logits, require_finite

NORMALIZATION = ("unit_sphere: subtract the cloud's mean point, then divide by the largest "
                 "distance of a point from it (pointkd.data.normalize_unit_sphere)")


EXPORT_SAMPLERS = choices(ExportSampler)


@dataclass(frozen=True)
class ExportResult:
    """What `run` wrote: `export_onnx`'s report (the file, its size, opset, point axis, and
    with check data the parity and the cost of another sampler)."""

    report: dict

    def text(self) -> str:
        """`wrote FILE (0.42 MB, opset 18; input ... ); parity on N clouds: ...`, and a line
        on the exported sampler where it is not the trained one."""
        report = self.report
        points = "any number of points" if report["dynamic_points"] else (
            f"exactly {report['num_points']} points")
        line = (f"wrote {report['onnx']} ({report['bytes'] / 1e6:.2f} MB, opset "
                f"{report['opset']}; input (batch, points, 3) unit-sphere normalised, {points})")
        if "parity" in report:
            p = report["parity"]
            line += (f"; parity on {p['clouds']} clouds: max |diff| {p['max_abs_diff']:.2e}, "
                     f"argmax agreement {100 * p['argmax_agreement']:.2f}%")
        lines = [line]
        if "sampler" in report:
            sm = report["sampler"]
            cost = (f": accuracy on the check clouds {100 * sm['check_oa_exported']:.2f}% vs "
                    f"{100 * sm['check_oa_trained']:.2f}% as trained, top-1 agreement "
                    f"{100 * sm['top1_agreement_with_trained']:.2f}%"
                    if "check_oa_exported" in sm else " (--check-data measures what it costs)")
            lines.append(f"sampler {sm['exported']} instead of {sm['trained']}{cost}")
        return "\n".join(lines)


def run(cfg: ExportConfig) -> ExportResult:
    """`pointkd export`: check the settings and the output file (replaced only with
    `overwrite`, never the checkpoint), then `export_onnx`."""
    cfg.check()
    rundir.check_output_file(cfg.onnx, cfg.overwrite, inputs=[cfg.checkpoint], option="--onnx")
    return ExportResult(export_onnx(cfg.checkpoint, cfg.onnx, opset=cfg.opset,
                                    check_data=cfg.check_data, check_count=cfg.check_count,
                                    device=cfg.device, sampler=cfg.sampler))


def export_onnx(checkpoint: str, out: str, opset: int = 18, check_data: str | None = None,
                check_count: int = 256, device: str = "cpu", sampler: str | None = None
                ) -> dict:
    """Export with a dynamic batch axis (and point axis where the model allows it) and the
    expected input in the metadata; with `check_data`, compare onnxruntime to PyTorch.

    `sampler` (students only): export with another anchor sampler than the model was trained
    with. FPS is a 256-step loop that ONNX Runtime runs node by node (most of a student's
    batch-1 time); "fps_coarse" (64 steps) and "first" (none: the input order, which must
    then be random) are faster and less accurate — with `check_data`, the report says by how
    much on those clouds (BENCHMARKS.md: on ModelNet40)."""
    model, meta = load_model(checkpoint, resolve_device(device))
    num_points = meta.get("num_points", 1024)
    trained = _set_sampler(model, meta, sampler)
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # written beside the target and moved over it only once every check has passed, so a
    # failed export never leaves a file behind nor clobbers an existing one
    tmp = out_path.with_name(f".{out_path.name}.partial")
    # the exporter and onnx follow links: refuse one at either name before writing anything
    safe_io.refuse_link(out_path)
    safe_io.refuse_link(tmp)
    try:
        _export(model, meta, tmp, num_points, opset, dynamic_points=True)
        model = model.cpu()
        dynamic = _runs_at_other_point_counts(model, tmp, num_points)
        if not dynamic:  # the traced graph baked the point count in: say so in the graph
            _export(model, meta, tmp, num_points, opset, dynamic_points=False)
        props = onnx_metadata(meta, num_points, dynamic)
        props.update(sampler_metadata(model, trained))
        proto = _with_metadata(tmp, props)
        report = {"onnx": str(out_path), "model": meta["model"], "opset": opset,
                  "bytes": proto.ByteSize(), "num_points": num_points,
                  "dynamic_points": dynamic}
        if trained is not None:
            report["sampler"] = {"exported": model.sampler, "trained": trained}
        if check_data:
            from pointkd.data import load_split

            ds = load_split(check_data, "test", num_points=num_points)
            points, labels = ds.points[:check_count], ds.labels[:check_count]
            report["parity"] = check_parity(model, tmp, points)
            if trained is not None:
                report["sampler"].update(_sampler_cost(model, trained, points, labels))
        _save(proto, out_path)
    finally:
        tmp.unlink(missing_ok=True)
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


def _export(model: torch.nn.Module, meta: dict, path: Path, num_points: int, opset: int,
            dynamic_points: bool) -> None:
    device = next(model.parameters()).device
    example = torch.rand(2, num_points, 3, device=device) * 2 - 1
    axes = {0: "batch", 1: "points"} if dynamic_points else {0: "batch"}
    try:
        # the tracer's notes on shape-dependent Python code: what they warn about is exactly
        # what `_runs_at_other_point_counts` checks
        with warnings.catch_warnings(), _native_output_silenced():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (example,), str(path), input_names=["points"], output_names=["logits"],
                dynamic_axes={"points": axes, "logits": {0: "batch"}}, opset_version=opset,
                dynamo=False,
            )
    except Exception as exc:  # unsupported op in a model family
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"model '{meta['model']}' cannot be exported to ONNX: {first}") from None


def _runs_at_other_point_counts(model: torch.nn.Module, path: Path, num_points: int) -> bool:
    """Whether the exported graph matches PyTorch at half and double the point count."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # a failing run is an expected answer here, not news
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception:  # a graph onnxruntime rejects with a free point axis
        return False
    rng = np.random.default_rng(0)
    for n in (max(1, num_points // 2), 2 * num_points):
        x = normalize_unit_sphere(rng.normal(size=(2, n, 3))).astype(np.float32)
        try:
            got = session.run(None, {"points": x})[0]
        except Exception:  # e.g. a reshape to the traced size
            return False
        ref = predict_logits(model, x, 2, "cpu").numpy()
        if got.shape != ref.shape or not np.allclose(got, ref, atol=1e-3, rtol=1e-3):
            return False
    return True


def _set_sampler(model: torch.nn.Module, meta: dict, sampler: str | None) -> str | None:
    """Switch a student's anchor sampler for export; returns the one it was trained with, or
    None when the sampler is left as it is."""
    if sampler is None or sampler == getattr(model, "sampler", None):
        return None
    if sampler not in EXPORT_SAMPLERS:
        raise ModelError(f"--sampler must be one of {', '.join(EXPORT_SAMPLERS)}, got "
                         f"{sampler!r}")
    if not hasattr(model, "sampler"):
        raise ModelError(f"model '{meta['model']}' has no anchor sampler to choose (--sampler "
                         "is for the student family)")
    trained, model.sampler = model.sampler, sampler
    return trained


def _sampler_cost(model: torch.nn.Module, trained: str, points: np.ndarray,
                  labels: np.ndarray) -> dict:
    """Accuracy on the check clouds with the exported sampler and with the trained one, and
    how often their top-1 agree: what the faster export costs."""
    exported = model.sampler
    fast = predict_logits(model, points, 32, "cpu").argmax(1).numpy()
    model.sampler = trained
    try:
        slow = predict_logits(model, points, 32, "cpu").argmax(1).numpy()
    finally:
        model.sampler = exported
    return {"check_oa_exported": float((fast == labels).mean()),
            "check_oa_trained": float((slow == labels).mean()),
            "top1_agreement_with_trained": float((fast == slow).mean())}


def onnx_metadata(meta: dict, num_points: int, dynamic_points: bool) -> dict[str, str]:
    """What a user of the .onnx file needs to feed it correctly (ONNX metadata_props)."""
    return {
        "pointkd_version": __version__,
        "model": meta["model"],
        "input": "points: float32 (batch, points, 3), x y z per point",
        "num_points": str(num_points),
        "points_axis": (f"dynamic (trained at {num_points}; checked against PyTorch at "
                        f"{max(1, num_points // 2)} and {2 * num_points})" if dynamic_points
                        else f"fixed: exactly {num_points} points"),
        "normalization": NORMALIZATION,
        "output": "logits: float32 (batch, classes); softmax for probabilities",
        "class_names": json.dumps(list(meta.get("class_names") or [])),
        # read by `pointkd record --teacher model.onnx` (pointkd.teacher)
        "input_normalization": "pointkd", "pointkd_model": meta["model"],
    }


def sampler_metadata(model: torch.nn.Module, trained: str | None) -> dict[str, str]:
    """A student's anchor sampler, and what it asks of the input's point order: "first" and
    "fps_coarse" take their anchors from the first points as given, so a cloud in scan order
    (a LiDAR sweep, a mesh's vertex order) must be shuffled before it is fed."""
    sampler = getattr(model, "sampler", None)
    if sampler is None:
        return {}
    props = {"sampler": sampler if trained is None else f"{sampler} (trained with {trained})"}
    if sampler != "fps":
        props["points_order"] = ("random: the first points of the input are the anchors; "
                                "shuffle a cloud that is in scan or file order")
    return props


def _with_metadata(path: Path, props: dict[str, str]):
    """The exported graph at `path` with `props` as its metadata (an onnx ModelProto)."""
    import onnx

    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, props)
    return model


def _save(model, path: Path) -> None:
    """Write the final file through safe_io: never through a link, temp + rename, and a full
    or read-only disk is one line naming `path` (onnx.save would follow a link)."""
    # serialised here: onnx.save on a file object looks for a path beside it
    safe_io.replace_files({path: lambda f: f.write(model.SerializeToString())})


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
