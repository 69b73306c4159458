"""Loading teachers: one or several of any kind, each callable on a batch of clouds.

Running them over data (class matching, a batch, a plan of record rows) is the stage in
`pointkd.teacher_inference`, used by `pointkd record` (offline KD) and by online KD
(`pointkd.targets.OnlineTeacher`). A teacher is named by what the user has:

- `runs/x/best.pt` — a pointkd checkpoint (kind `pointkd`);
- `model.onnx` — any ONNX model, run by ONNX Runtime (kind `onnx`; CPU, or the CUDA provider
  when recording on a GPU and onnxruntime-gpu is installed);
- `package.module:factory` or `path/to/file.py:factory` — the user's own PyTorch code (kind
  `module`): `factory()` returns an `nn.Module`; weights come from `--weights FILE`
  (`torch.load(weights_only=True)`: a state dict, or a dict holding one under `state_dict` /
  `model`; or a `.safetensors` file).

The contract every teacher meets: input (B, P, 3) float32, output (B, C) finite logits,
each cloud's logits its own (independent of the batch size and of the other clouds in the
batch). ONNX and `module` teachers are checked once when loaded (`_check_contract`: one
cloud, then three clouds led by that one); an ONNX graph must also declare its input
channels-last with a free batch axis. A declared point count (`num_points` attribute, ONNX
metadata or a static point axis) must be an integer in 1..`MAX_POINTS`. Every call gets its
own copy of the batch, so a teacher that modifies its input in place (legal PyTorch) cannot
change what the next teacher, or the student in online KD, sees; logits that come out
NaN/Inf while recording or training are an error naming the teacher
(`teacher_inference.check_finite`).

The input is in pointkd's normalisation (each shape centred at its centroid and scaled into
the unit sphere, then augmented) unless the teacher declares its own — `unit_sphere`
(re-normalised after augmentation), `unit_cube` (bounding box centred, longest side 1) or
`none` (the dataset's own units) — via an `input_normalization` attribute on the module, an
`input_normalization` entry in the ONNX metadata, or `--teacher-normalization`. Classes are
matched by name: a teacher's names come from its checkpoint, a `class_names` attribute, ONNX
metadata `class_names` (a JSON list, which `pointkd export` writes), or `--class-names FILE`
(one name a line, in the teacher's output order); its outputs are reordered to the data's
class order. A teacher may know more classes than the data (a ModelNet40 teacher for a
ModelNet10 student): only its logits of the data's classes are kept, in the data's order, so
its softmax is over the data's classes; the manifest's teacher entry then records
`class_map` (the teacher index of each data class). Every data class must be among the
teacher's. A teacher without names must have the data's class count and is taken to be in
the data's order.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import numbers
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pointkd import checkpoint, safe_io
from pointkd.config.limits import MAX_POINTS
from pointkd.config.types import Normalization
from pointkd.errors import ModelError, PointKDError

NORMALIZATIONS: tuple[str, ...] = typing.get_args(Normalization)
KINDS = ("pointkd", "onnx", "module")


def teacher_kind(spec: str) -> str:
    """`onnx` for *.onnx, `module` for `dotted.module:factory` / `file.py:factory`, else
    `pointkd` (a checkpoint path)."""
    if spec.lower().endswith(".onnx"):
        return "onnx"
    if ":" in spec and not Path(spec).exists():
        head, _, tail = spec.rpartition(":")
        if head and tail.isidentifier() and (head.endswith(".py") or all(
                part.isidentifier() for part in head.split("."))):
            return "module"
    return "pointkd"


@dataclass
class Teacher:
    """One loaded teacher: call it on a (B, P, 3) batch to get (B, C_data) float32 logits,
    in the data's class order and with its own input normalisation applied."""

    kind: str
    source: str  # what the user named it by
    forward: Callable[[torch.Tensor], torch.Tensor]
    num_classes: int
    class_names: list[str] | None
    num_points: int | None
    normalization: str
    entry: dict  # the manifest's description (kind, file/entry point, hashes)
    order: torch.Tensor | None = None  # data class i <- teacher output order[i]
    frames: torch.Tensor | None = field(default=None, repr=False)  # (N, 4) for `none`

    def __call__(self, x: torch.Tensor, samples: torch.Tensor | None = None) -> torch.Tensor:
        given = x
        x = self.normalize(x, samples)
        if x is given:  # the caller's tensor: other teachers (and the student) read it after us
            x = x.clone()
        if self.kind == "pointkd":
            z = self.forward(x)
        else:  # foreign code: its failures are the user's input problem, said in one line
            try:
                z = self.forward(x)
            except Exception as exc:
                raise ModelError(f"teacher {self.source} fails on a batch of shape "
                                 f"{tuple(x.shape)} ({_brief(exc)})") from None
        z = self._checked_output(z, len(x))
        if self.order is not None:
            z = z[:, self.order.to(z.device)]
        return z

    def _checked_output(self, z: object, batch: int) -> torch.Tensor:
        """(B, C) float32 logits, or a one-line error naming the teacher: a shape that varies
        with the batch would otherwise fail later in a traceback, or land in the wrong rows."""
        if not torch.is_tensor(z) or tuple(z.shape) != (batch, self.num_classes):
            shape = tuple(z.shape) if torch.is_tensor(z) else type(z).__name__
            raise ModelError(f"teacher {self.source}: output {shape} for a batch of {batch}, "
                             f"expected ({batch}, {self.num_classes}) logits")
        return z.float()

    def normalize(self, x: torch.Tensor, samples: torch.Tensor | None) -> torch.Tensor:
        if self.normalization == "pointkd":
            return x
        if self.normalization == "unit_sphere":
            x = x - x.mean(dim=1, keepdim=True)
            radius = x.norm(dim=2).amax(dim=1).clamp_min(1e-12)
            return x / radius[:, None, None]
        if self.normalization == "unit_cube":
            lo, hi = x.amin(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)
            side = (hi - lo).amax(dim=2, keepdim=True).clamp_min(1e-12)
            return (x - (lo + hi) / 2) / side
        if self.frames is None or samples is None:
            raise ModelError(f"teacher {self.source}: input normalization 'none' needs the "
                             "dataset's own units, which this stage does not provide")
        frame = self.frames[samples.to(self.frames.device)].to(x.device)
        return x * frame[:, None, 3:] + frame[:, None, :3]


def load_teachers(specs: list[str], device: torch.device | str = "cpu",
                  weights: list[str] | None = None, class_names: str | None = None,
                  normalization: str | None = None) -> list[Teacher]:
    """Load every teacher named in `specs` (kinds: module docstring). The k-th `weights` file
    belongs to the k-th `module` teacher; `class_names` (a file) and `normalization` apply to
    every teacher that does not declare its own."""
    if not specs:
        raise ModelError("no teacher given")
    if normalization is not None and normalization not in NORMALIZATIONS:
        raise ModelError(f"unknown teacher normalization '{normalization}' (choose from "
                         f"{', '.join(NORMALIZATIONS)})")
    kinds = [teacher_kind(s) for s in specs]
    weights = list(weights or [])
    if len(weights) != kinds.count("module"):
        raise ModelError(f"{kinds.count('module')} module teacher(s) but {len(weights)} "
                         "--weights file(s): give one --weights per `module:factory` teacher, "
                         "in the same order")
    names = read_class_names(class_names) if class_names else None
    device = torch.device(device)
    loaded, w = [], iter(weights)
    for spec, kind in zip(specs, kinds, strict=True):
        if kind == "onnx":
            t = _load_onnx(spec, device)
        elif kind == "module":
            t = _load_module(spec, next(w), device)
        else:
            t = _load_pointkd(spec, device)
        if kind != "pointkd":
            t.class_names = t.class_names or names
            if normalization and t.entry.get("normalization_declared") is not True:
                t.normalization = normalization
            t.entry.pop("normalization_declared", None)
            t.entry["normalization"] = t.normalization
        loaded.append(t)
    return loaded


def match_classes(teachers: list[Teacher], data_names: list[str], data_label: str,
                  error: type[PointKDError] = ModelError) -> None:
    """Check every teacher against the data's classes and set its output reordering; a
    mismatch is a one-line `error`."""
    try:
        _match_classes(teachers, data_names, data_label)
    except ModelError as exc:
        raise error(str(exc)) from None


def _match_classes(teachers: list[Teacher], data_names: list[str], data_label: str) -> None:
    for t in teachers:
        if t.class_names is None:  # nothing to match by: the count must agree, order assumed
            if t.num_classes != len(data_names):
                raise ModelError(f"teacher {t.source} has {t.num_classes} classes, the data "
                                 f"{len(data_names)}, and no class names to map them by")
            continue
        if len(t.class_names) != t.num_classes:
            raise ModelError(f"teacher {t.source} outputs {t.num_classes} logits but has "
                             f"{len(t.class_names)} class names")
        order = class_map(t.source, t.class_names, data_names, data_label)
        if t.kind != "pointkd":  # a checkpoint carries its names; foreign teachers' are noted
            t.entry["class_names"] = list(t.class_names)
        if order != list(range(t.num_classes)):
            t.order = torch.tensor(order)
            t.entry["class_map"] = order  # absent when the identity: older manifests unchanged


def class_map(source: str, names: list[str], data_names: list[str],
              data_label: str) -> list[int]:
    """The teacher's output index of each data class, in the data's order, matched by name.
    The teacher may know more classes than the data (a ModelNet40 teacher for ModelNet10):
    its other logits are dropped, so its softmax is over the data's classes alone. A data
    class the teacher does not know is an error: its logit would have to be invented."""
    if len(set(names)) != len(names):
        raise ModelError(f"teacher {source}: classes do not match {data_label}: its class "
                         "names repeat")
    missing = [n for n in data_names if n not in names]
    if missing:
        extra = [n for n in names if n not in data_names]  # often the misspelt ones
        raise ModelError(f"teacher {source}: classes do not match {data_label}: the data's "
                         f"{_few(missing)} not among its {len(names)} classes"
                         + (f"; its {_few(extra)} not among the data's" if extra else ""))
    return [names.index(n) for n in data_names]


def _few(names: list[str]) -> str:
    """At most three names, then how many more: an error message stays one short line."""
    more = f" (and {len(names) - 3} more)" if len(names) > 3 else ""
    return ", ".join(names[:3]) + more


def attach_frames(teachers: list[Teacher], raw_points: np.ndarray | None) -> None:
    """Teachers that take the dataset's own units (`none`) need every shape's unit-sphere
    frame (centroid, radius) to undo pointkd's normalisation; `raw_points` is the split
    loaded with `normalize=False` (None: the data was not normalised, identity frames)."""
    need = [t for t in teachers if t.normalization == "none"]
    if not need:
        return
    frames = None if raw_points is None else torch.from_numpy(unit_sphere_frames(raw_points))
    for t in need:
        t.frames = frames if frames is not None else torch.zeros(0, 4)
        if frames is None:
            t.normalization = "pointkd"  # the clouds are already in the data's own units


def unit_sphere_frames(points: np.ndarray) -> np.ndarray:
    """(N, 4) float32: centroid x, y, z and radius of each cloud, as
    `data.normalize_unit_sphere` computes them."""
    out = np.empty((len(points), 4), np.float32)
    for start in range(0, len(points), 64):
        x = points[start:start + 64].astype(np.float64)
        c = x.mean(axis=1)
        r = np.sqrt(((x - c[:, None]) ** 2).sum(-1).max(axis=1, initial=0.0))
        out[start:start + 64, :3], out[start:start + 64, 3] = c, np.where(r > 0, r, 1.0)
    return out


def teacher_identity(spec: str, weights: str | None = None) -> dict:
    """The hashes that identify a teacher in a manifest, computed without loading it:
    {kind, sha256 (checkpoint / ONNX / weights file)} and, for module teachers, the entry
    point and the sha256 of the file that defines the factory."""
    kind = teacher_kind(spec)
    if kind == "module":
        if weights is None:
            raise ModelError(f"teacher {spec}: a module teacher needs --weights")
        source_file = _factory_source(spec)
        return {"kind": kind, "entry": spec, "sha256": _sha256(weights, "weights"),
                "source_sha256": _sha256(source_file, "source") if source_file else None}
    return {"kind": kind, "sha256": _sha256(spec, "teacher")}


def read_class_names(path: str | Path) -> list[str]:
    """One class name a line (blank lines ignored)."""
    try:
        names = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: cannot read class names ({type(exc).__name__})") from None
    if not names:
        raise ModelError(f"{path}: no class names")
    return names


# --- the three kinds ------------------------------------------------------------------------

def _load_pointkd(path: str, device: torch.device) -> Teacher:
    model, meta = checkpoint.load_model(path, device)
    for p in model.parameters():
        p.requires_grad_(False)
    entry = {"file": Path(path).name, "model": meta["model"],
             "model_kwargs": meta.get("model_kwargs", {}), "sha256": _sha256(path, "teacher"),
             "num_classes": meta["num_classes"]}  # (no "kind": pointkd is the default)
    names = meta.get("class_names")
    return Teacher("pointkd", path, model, int(meta["num_classes"]),
                   list(names) if names else None, meta.get("num_points"), "pointkd", entry)


def _load_onnx(path: str, device: torch.device) -> Teacher:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ModelError("ONNX teachers need onnxruntime: pip install 'pointkd[onnx]' "
                         "(or onnxruntime-gpu)") from None
    if not Path(path).is_file():
        raise ModelError(f"teacher not found: {path}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # honour --threads
    options.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
    try:
        session = ort.InferenceSession(path, options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own types for bad files
        raise ModelError(f"{path}: not a loadable ONNX model ({_brief(exc)})") from None
    name, shape = _onnx_input(session, path)
    meta = session.get_modelmeta().custom_metadata_map

    def forward(x: torch.Tensor) -> torch.Tensor:
        out = session.run(None, {name: x.detach().float().cpu().numpy()})[0]
        return torch.from_numpy(np.asarray(out, np.float32)).to(x.device)

    names = _json_names(meta.get("class_names"), path)
    norm = meta.get("input_normalization")
    if norm is not None and norm not in NORMALIZATIONS:
        raise ModelError(f"{path}: metadata input_normalization '{norm}' is not one of "
                         f"{', '.join(NORMALIZATIONS)}")
    num_points = _onnx_points(shape, meta, path)
    entry = {"kind": "onnx", "file": Path(path).name, "model": "onnx",
             "sha256": _sha256(path, "teacher"), "normalization_declared": norm is not None}
    t = Teacher("onnx", path, forward, 0, names, num_points, norm or "pointkd", entry)
    t.num_classes = entry["num_classes"] = _check_contract(t, path, device)
    return t


def _load_module(spec: str, weights: str, device: torch.device) -> Teacher:
    factory, source_file = _import_factory(spec)
    try:
        model = factory()
    except Exception as exc:  # the user's code may raise anything
        raise ModelError(f"teacher {spec}: the factory raised {_brief(exc)}") from None
    if not isinstance(model, nn.Module):
        raise ModelError(f"teacher {spec}: the factory returned {type(model).__name__}, not an "
                         "nn.Module")
    state = _read_weights(weights)
    _check_finite_weights(state, spec, weights)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:160]
        raise ModelError(f"teacher {spec}: weights {weights} do not fit the model ({first})"
                         ) from None
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    norm = getattr(model, "input_normalization", None)
    if norm is not None and norm not in NORMALIZATIONS:
        raise ModelError(f"teacher {spec}: input_normalization '{norm}' is not one of "
                         f"{', '.join(NORMALIZATIONS)}")
    names = getattr(model, "class_names", None)
    entry = {"kind": "module", "entry": spec, "model": spec.rpartition(":")[2],
             "file": Path(weights).name, "sha256": _sha256(weights, "weights"),
             "source_file": Path(source_file).name if source_file else None,
             "source_sha256": _sha256(source_file, "source") if source_file else None,
             "normalization_declared": norm is not None}
    points = _declared_points(getattr(model, "num_points", None), f"teacher {spec}",
                              "attribute num_points")
    t = Teacher("module", spec, model, 0, list(names) if names else None, points,
                norm or "pointkd", entry)
    t.num_classes = entry["num_classes"] = _check_contract(t, spec, device)
    return t


def _import_factory(spec: str) -> tuple[Callable[[], nn.Module], str | None]:
    """`package.module:factory` (importable, the working directory included) or
    `path/to/file.py:factory` -> (factory, the file defining it)."""
    head, _, attr = spec.rpartition(":")
    try:
        if head.endswith(".py"):
            path = Path(head)
            if not path.is_file():
                raise ModelError(f"teacher {spec}: {path} not found")
            name = f"pointkd_teacher_{path.stem}"
            loader = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(loader)
            sys.modules[name] = module
            loader.loader.exec_module(module)
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))  # `pointkd` (not `python -m`) lacks it
            module = importlib.import_module(head)
    except ModelError:
        raise
    except Exception as exc:  # ImportError, SyntaxError, anything the module runs
        raise ModelError(f"teacher {spec}: cannot import {head} ({_brief(exc)})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelError(f"teacher {spec}: {head} has no callable '{attr}'")
    return factory, getattr(module, "__file__", None)


def _factory_source(spec: str) -> str | None:
    """The file that defines a factory, found without running the user's module."""
    head = spec.rpartition(":")[0]
    if head.endswith(".py"):
        if not Path(head).is_file():
            raise ModelError(f"teacher {spec}: {head} not found")
        return head
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        found = importlib.util.find_spec(head)
    except Exception as exc:  # a parent package that fails to import
        raise ModelError(f"teacher {spec}: cannot find {head} ({_brief(exc)})") from None
    if found is None:
        raise ModelError(f"teacher {spec}: cannot find module {head}")
    return found.origin


def _read_weights(path: str) -> dict:
    p = Path(path)
    if not p.is_file() or p.stat().st_size == 0:
        raise ModelError(f"weights not found or empty: {path}")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(p))
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, pickled code (refused by weights_only) ...
        raise ModelError(f"cannot read weights {path} ({_brief(exc)})") from None
    for key in ("state_dict", "model"):  # common wrappers: {"state_dict": ..., "epoch": ...}
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ModelError(f"{path}: not a state dict (name -> tensor)")
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel/DDP
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _check_contract(t: Teacher, label: str, device: torch.device) -> int:
    """The teacher contract (module docstring), checked once at load; returns C.

    One cloud, then three clouds led by that same cloud: both outputs must be (B, C) finite
    logits, and the first cloud's must agree to float tolerance. A graph fixed to one batch
    size fails one of the two; a teacher whose logits depend on the other clouds (BatchNorm
    left in training mode, a batch-wide normalisation) disagrees, and would otherwise record
    rows that change with --batch-size."""
    gen = torch.Generator().manual_seed(0)  # the same probe every load; global RNG untouched
    clouds = (torch.rand(3, t.num_points or 1024, 3, generator=gen) * 2 - 1).to(device)
    one, three = _probe(t, clouds[:1], label), _probe(t, clouds, label)
    if one.shape[1] != three.shape[1]:
        raise ModelError(f"teacher {label}: {one.shape[1]} logits for a batch of 1 but "
                         f"{three.shape[1]} for a batch of 3")
    scale = float(three[0].abs().max())
    gap = float((one[0] - three[0]).abs().max())
    if gap > BATCH_TOLERANCE * max(1.0, scale):
        raise ModelError(f"teacher {label}: a cloud's logits change with the other clouds in "
                         f"its batch (by up to {gap:.3g}); a teacher must score each cloud on "
                         "its own (BatchNorm in training mode? call .eval() before export)")
    return int(one.shape[1])


BATCH_TOLERANCE = 1e-3  # relative: other batch sizes may take other kernels (float rounding)


def _probe(t: Teacher, x: torch.Tensor, label: str) -> torch.Tensor:
    """The teacher's raw output on probe batch `x` (its own copy): (B, C >= 2) finite floats."""
    shape = tuple(x.shape)
    try:
        with torch.inference_mode():
            z = t.forward(x.clone())
    except Exception as exc:
        raise ModelError(f"teacher {label}: a {shape} float32 batch fails "
                         f"({_brief(exc)})") from None
    if not torch.is_tensor(z) or z.ndim != 2 or z.shape[0] != shape[0] or z.shape[1] < 2:
        got = tuple(z.shape) if torch.is_tensor(z) else type(z).__name__
        raise ModelError(f"teacher {label}: output must be (B, C) logits, got {got} for a "
                         f"batch of {shape[0]}")
    z = z.float()
    if not bool(torch.isfinite(z).all()):
        raise ModelError(f"teacher {label}: its logits on a probe batch {shape} are not finite "
                         "(NaN/Inf): NaN/Inf weights, or arithmetic that overflows")
    return z


def _onnx_input(session, path: str) -> tuple[str, list]:
    """The one input's name and shape, checked against the contract: float32 (B, P, 3) with a
    free batch axis. The layout is checked, never guessed from whichever axis is static: a
    channels-first (B, 3, P) graph would otherwise be fed (B, P, 3) clouds as 3 points."""
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 3:
        raise ModelError(f"{path}: an ONNX teacher takes one input of shape (B, P, 3), this "
                         f"one takes {[i.shape for i in inputs]}")
    name, shape, kind = inputs[0].name, list(inputs[0].shape), inputs[0].type
    if kind != "tensor(float)":
        raise ModelError(f"{path}: an ONNX teacher takes float32 clouds, this one {kind}")
    batch, points, channels = (d if isinstance(d, int) else None for d in shape)
    if channels not in (None, 3) or (points == 3 and channels is None):
        raise ModelError(f"{path}: input shape {shape} is not (B, P, 3) (channels-first "
                         "(B, 3, P)? pointkd feeds x, y, z last: export it channels-last)")
    if batch is not None:
        raise ModelError(f"{path}: its graph fixes the batch size at {batch} (input shape "
                         f"{shape}); export it with a dynamic batch axis")
    return name, shape


def _onnx_points(shape: list, meta: dict[str, str], path: str) -> int | None:
    """A static point axis says the count; a dynamic one (pointkd's exports) runs at any
    count, and the count the model was trained at is in the metadata `num_points`."""
    declared = _metadata_points(meta, path)
    if not isinstance(shape[1], int):
        return declared
    static = _declared_points(shape[1], path, "the input's point axis")
    if declared is not None and declared != static:
        raise ModelError(f"{path}: metadata num_points {declared} but the input's point axis "
                         f"is fixed at {static}")
    return static


def _metadata_points(meta: dict[str, str], path: str) -> int | None:
    """The point count in an ONNX file's metadata (`num_points`), if it declares one."""
    value = meta.get("num_points")
    if value is None:
        return None
    if not value.strip().isdigit():
        raise ModelError(f"{path}: metadata num_points must be an integer in 1..{MAX_POINTS}, "
                         f"got {value!r}")
    return _declared_points(int(value), path, "metadata num_points")


def _declared_points(value: object, label: str, what: str) -> int | None:
    """A teacher's declared points per cloud: None, or an integer in 1..MAX_POINTS (a
    negative, fractional, textual or absurd count is a one-line error, never an allocation
    that fails in a traceback)."""
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
            or not 1 <= int(value) <= MAX_POINTS):
        raise ModelError(f"{label}: {what} must be an integer in 1..{MAX_POINTS}, got "
                         f"{value!r}")
    return int(value)


def _check_finite_weights(state: dict, spec: str, path: str) -> None:
    """NaN/Inf weights give NaN logits: refused at load, naming the teacher and the file."""
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ModelError(f"teacher {spec}: weights {path}: '{key}' is not finite "
                             "(NaN/Inf)")


def _json_names(text: str | None, path: str) -> list[str] | None:
    if text is None:
        return None
    try:
        names = json.loads(text)
    except json.JSONDecodeError:
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ModelError(f"{path}: metadata class_names must be a JSON list of strings")
    return names


def _sha256(path: str | Path, what: str) -> str:
    try:
        return safe_io.file_sha256(path)
    except OSError:
        raise ModelError(f"{what} file not found or unreadable: {path}") from None


def _brief(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:120]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
