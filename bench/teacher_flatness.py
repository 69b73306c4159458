"""How flat a teacher's softened outputs are: mean top probability, second probability and
entropy of softmax(z / tau) on training shapes, for several distillation temperatures.

A teacher trained with label smoothing has compressed logits: at a high tau its targets
approach the uniform distribution and teach little beyond the label (issue #13). This
measures it before choosing tau on validation.

    python bench/teacher_flatness.py --teacher runs/teacher_l/best.pt \
        --data ../shared/data/modelnet40_1024 --shapes 512 --json bench/results/x.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from machine import cpu_name  # bench/machine.py (script dir on sys.path)

from pointkd.checkpoint import load_model
from pointkd.data import load_split


def flatness(logits: torch.Tensor, tau: float) -> dict[str, float]:
    p = torch.softmax(logits / tau, dim=1)
    top2 = p.topk(2, dim=1).values
    entropy = -(p * p.clamp_min(1e-12).log()).sum(dim=1)
    return {"tau": tau, "mean_top_prob": float(top2[:, 0].mean()),
            "mean_second_prob": float(top2[:, 1].mean()),
            "mean_entropy_nats": float(entropy.mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--shapes", type=int, default=512, help="training shapes, drawn with seed 0")
    ap.add_argument("--taus", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, meta = load_model(args.teacher, "cpu")
    ds = load_split(args.data, "train", num_points=meta.get("num_points"))
    pick = np.sort(np.random.default_rng(0).choice(len(ds), min(args.shapes, len(ds)),
                                                   replace=False))
    x = torch.from_numpy(ds.points[pick])
    with torch.no_grad():
        z = torch.cat([model(x[i:i + 64]) for i in range(0, len(x), 64)])
    acc = float((z.argmax(1).numpy() == ds.labels[pick]).mean())
    result = {"command": "python bench/teacher_flatness.py " + " ".join(
                  f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                  for k, v in vars(args).items()),
              "machine": cpu_name(), "teacher": args.teacher, "teacher_epoch": meta.get("epoch"),
              "label_smoothing": (meta.get("config") or {}).get("train", {}).get(
                  "label_smoothing"),
              "shapes": len(pick), "train_accuracy_on_them": acc,
              "uniform_entropy_nats": math.log(ds.num_classes),
              "per_tau": [flatness(z, t) for t in args.taus]}
    Path(args.json).write_text(json.dumps(result, indent=1))
    for row in result["per_tau"]:
        print(f"tau {row['tau']:g}: top {row['mean_top_prob']:.3f}, second "
              f"{row['mean_second_prob']:.3f}, entropy {row['mean_entropy_nats']:.2f} nats "
              f"(uniform {result['uniform_entropy_nats']:.2f})")


if __name__ == "__main__":
    main()
