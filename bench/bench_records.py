"""Record store benchmark, one run -> bench/results/records.json:

1. bytes per augmented sample for each logits encoding at 40 classes, against the 12,288 B of
   a stored 1,024-point float32 cloud;
2. recording throughput (`pointkd.records.record`, K = 1) against the same teacher's
   forward-only throughput (clouds already in memory, no augmentation, no encoding, no I/O)
   at the same batch size on the same real ModelNet40 subset — alternating, several rounds —
   for a small and a larger registered model (random weights: speed does not depend on them);
3. `augment.apply` time at B = 32, P = 1,024 against the small model's forward.

    python bench/bench_records.py [--data ../shared/data/modelnet40_1024]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: shared CPUs (bench_speed)

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from machine import cpu_name  # bench/machine.py (script dir on sys.path)

from pointkd import augment
from pointkd.checkpoint import save_checkpoint
from pointkd.config.stages import RecordConfig
from pointkd.data import load_split
from pointkd.models import count_parameters, create_model
from pointkd.records import CLOUD_BYTES, read_manifest, row_dtype
from pointkd.stages import record

REPO = Path(__file__).resolve().parents[1]


def sizes(num_classes: int = 40) -> dict[str, int]:
    out = {enc: row_dtype(num_classes, enc).itemsize for enc in ("fp32", "fp16", "int8")}
    out.update({f"top{k}": row_dtype(num_classes, "topk", topk=k).itemsize for k in (5, 10)})
    out["int8_each_of_2_teachers"] = row_dtype(num_classes, "int8", teachers=2).itemsize
    return out


def write_subset(data: str, n: int, root: Path) -> Path:
    """A ModelNet40-layout folder holding n random training shapes (record() takes a path)."""
    ds = load_split(data, "train", normalize=False)
    idx = np.sort(np.random.default_rng(0).permutation(len(ds))[:n])
    root.mkdir(parents=True)
    with h5py.File(root / "train.h5", "w") as f:
        f["data"], f["label"] = ds.points[idx], ds.labels[idx]
    (root / "shape_names.txt").write_text("\n".join(ds.class_names) + "\n")
    return root


def forward_only(model, points: torch.Tensor, batch_size: int) -> float:
    """Rows/s of the bare teacher forward over the same rows and batches as recording."""
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(points), batch_size):
            model(points[i: i + batch_size])
    return len(points) / (time.perf_counter() - t0)


def compare(name: str, data: Path, batch_size: int, rounds: int, tmp: Path) -> dict:
    ds = load_split(str(data), "train")
    torch.manual_seed(0)
    model = create_model(name, ds.num_classes).eval()
    ckpt = tmp / f"{name}.pt"
    save_checkpoint({"model": name, "model_kwargs": {}, "num_classes": ds.num_classes,
                     "class_names": ds.class_names, "num_points": ds.points.shape[1],
                     "state_dict": model.state_dict()}, ckpt)
    points = torch.from_numpy(ds.points)
    forward_only(model, points[: 2 * batch_size], batch_size)  # warm-up
    fwd, rec = [], []
    for r in range(rounds):
        def run_record(r=r):
            out = record.run(RecordConfig(teachers=[str(ckpt)], data=str(data),
                                      out=str(tmp / f"{name}-{r}"), k=1, seed=r,
                                      batch_size=batch_size, device="cpu", progress=False)).root
            rec.append(len(ds) / read_manifest(out)["recording"]["seconds"])

        # alternate the order so that drifting machine load hits both sides alike
        for step in ((lambda: fwd.append(forward_only(model, points, batch_size))),
                     run_record)[:: 1 if r % 2 == 0 else -1]:
            step()
        print(f"{name} round {r + 1}: forward-only {fwd[-1]:.1f} rows/s, recording "
              f"{rec[-1]:.1f} rows/s", flush=True)
    return {"model": name, "params": count_parameters(model), "rows": len(ds),
            "batch_size": batch_size, "forward_rows_per_s": fwd, "record_rows_per_s": rec,
            "record_over_forward": statistics.median(rec) / statistics.median(fwd)}


def apply_cost(small: str) -> dict:
    x = torch.rand(32, 1024, 3)
    spec = augment.AugmentSpec()
    params, seeds = augment.sample_params(32, torch.Generator().manual_seed(0), spec)
    model = create_model(small, 40).eval()

    def ms(fn, n: int) -> float:
        fn()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t0) / n * 1e3

    with torch.inference_mode():
        fwd = ms(lambda: model(x), 5)
    t = ms(lambda: augment.apply(x, params, seeds, spec), 30)
    return {"apply_ms": t, f"{small}_forward_ms": fwd, "apply_over_forward": t / fwd,
            "batch": 32, "points": 1024, "spec": "default (scale, shift, jitter, shuffle)"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared/data/modelnet40_1024"))
    ap.add_argument("--small", default="pointnet")
    ap.add_argument("--large", default="pointnet2_ssg")
    ap.add_argument("--small-shapes", type=int, default=512)
    ap.add_argument("--large-shapes", type=int, default=192)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=str(REPO / "bench/results/records.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result: dict = {
        "bytes_per_row_40_classes": sizes(40), "cloud_bytes": CLOUD_BYTES,
        "compression_vs_cloud": {k: round(CLOUD_BYTES / v, 1) for k, v in sizes(40).items()},
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        result["throughput"] = [
            compare(name, write_subset(args.data, n, tmp / f"subset-{name}"), args.batch_size,
                    args.rounds, tmp)
            for name, n in ((args.small, args.small_shapes), (args.large, args.large_shapes))]
    result["augment_apply"] = apply_cost(args.small)
    result["machine"] = {"cpu": cpu_name(), "threads": args.threads,
                         "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                         "load_avg": os.getloadavg(), "python": platform.python_version(),
                         "torch": torch.__version__}
    result["data"] = f"{Path(args.data).name} train, random subsets (seed 0)"
    result["command"] = "python " + " ".join(sys.argv)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"bytes": result["bytes_per_row_40_classes"],
                      "record/forward": [t["record_over_forward"] for t in result["throughput"]],
                      "apply/forward": result["augment_apply"]["apply_over_forward"]}))


if __name__ == "__main__":
    main()
