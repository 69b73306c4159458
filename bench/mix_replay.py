"""What mixed views cost at replay: building a batch's clouds (`augment.mix` + `augment.apply`)
with and without mixing, side by side, against one student training step on the same batch.

On real ModelNet40 clouds (1,024 points, batch 32), one thread, the variants interleaved over
several rounds; the median seconds per batch. Bytes per row come from the row layout.

    python bench/mix_replay.py --data ../shared/data/modelnet40_1024
writes bench/results/mix_replay.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: shared CPUs

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from machine import cpu_name, native_ops_used  # noqa: E402

from pointkd import augment  # noqa: E402
from pointkd.config.types import AugmentSpec  # noqa: E402
from pointkd.data import load_split  # noqa: E402
from pointkd.models import create_model  # noqa: E402
from pointkd.records.format import row_dtype  # noqa: E402


def batch_seconds(points: torch.Tensor, spec: AugmentSpec, batch: int, iters: int) -> float:
    """Seconds to build one batch of replayed clouds (rows' keys fixed, as replay has them)."""
    n = len(points)
    keys = augment.row_keys(0, torch.arange(batch * iters) % n, 0)
    params, seeds = augment.keyed_params(keys, spec)
    partners, lams = augment.keyed_mix(keys, spec, torch.arange(len(keys)) % n, n)
    start = time.perf_counter()
    for i in range(iters):
        s = slice(i * batch, (i + 1) * batch)
        shapes = torch.arange(s.start, s.stop) % n
        clouds = points[shapes]
        if spec.mix != "none":
            clouds = augment.mix(clouds, points[partners[s].clamp(min=0)], lams[s], seeds[s],
                                 spec)
        augment.apply(clouds, params[s], seeds[s], spec)
    return (time.perf_counter() - start) / iters


def step_seconds(points: torch.Tensor, model_name: str, batch: int, iters: int) -> float:
    model = create_model(model_name, 40)
    opt = torch.optim.AdamW(model.parameters())
    x, y = points[:batch], torch.zeros(batch, dtype=torch.long)
    start = time.perf_counter()
    for _ in range(iters):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / iters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/modelnet40_1024")
    ap.add_argument("--model", default="student_s")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", default=str(Path(__file__).parent / "results" /
                                          "mix_replay.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    points = torch.from_numpy(load_split(args.data, "train", num_points=1024).points[:2048])
    specs = {"none": AugmentSpec(), "points": AugmentSpec(mix="points", mix_prob=0.5),
             "ball": AugmentSpec(mix="ball", mix_prob=0.5)}
    times: dict[str, list[float]] = {k: [] for k in [*specs, "train_step"]}
    for _ in range(args.rounds):
        for name, spec in specs.items():
            times[name].append(batch_seconds(points, spec, args.batch_size, args.iters))
        times["train_step"].append(step_seconds(points, args.model, args.batch_size, 3))
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"purpose": "replay cost of mixed views: building a batch's clouds with and without "
                      "mixing, against one training step of the student on the batch",
           "command": "python " + " ".join(sys.argv), "model": args.model,
           "batch_size": args.batch_size, "num_points": 1024,
           "machine": f"{cpu_name()}, 1 thread, a training job on the other core",
           "native_ops": native_ops_used(),
           "bytes_per_row": {"plain": row_dtype(40, "int8").itemsize,
                             "mixed": row_dtype(40, "int8", mixed=True).itemsize},
           "ms_per_batch": {k: 1000 * v for k, v in med.items()},
           "share_of_a_step": {k: med[k] / med["train_step"] for k in specs}}
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
