"""Where a teacher could teach a student: on the test split, how many shapes each gets right
that the other gets wrong. A teacher whose right-only shapes are few next to the student's
own right-only shapes has little to pass on, whatever the distillation recipe.

    python bench/teacher_student_overlap.py --teacher zoo/student_l_modelnet40_cpu.pt \
        --student /work/runs-strong/plain-s0/last.pt --data ../shared/data/modelnet40_1024 \
        --json bench/results/overlap_student_l_plain-s0.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from machine import cpu_name  # bench/machine.py (script dir on sys.path)

from pointkd.checkpoint import load_model
from pointkd.data import load_split
from pointkd.metrics import predict_logits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--student", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    right = {}
    for role in ("teacher", "student"):
        model, meta = load_model(getattr(args, role), "cpu")
        ds = load_split(args.data, args.split, num_points=meta.get("num_points"))
        logits = predict_logits(model, ds.points, 32, torch.device("cpu"))
        right[role] = logits.argmax(1).numpy() == ds.labels
    t, s = right["teacher"], right["student"]
    n = len(t)
    counts = {"both_right": int((t & s).sum()), "teacher_only": int((t & ~s).sum()),
              "student_only": int((~t & s).sum()), "both_wrong": int((~t & ~s).sum())}
    out = {"teacher": args.teacher, "student": args.student, "data": args.data,
           "split": args.split, "shapes": n, **counts,
           "teacher_oa": float(t.mean()), "student_oa": float(s.mean()),
           "machine": f"{cpu_name()}, {args.threads} thread(s)",
           "command": "python " + " ".join(sys.argv)}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"teacher {100 * t.mean():.2f}%  student {100 * s.mean():.2f}%  " +
          "  ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
