"""Collect the teacher-ensemble members' training and the ensemble's evaluation into
bench/results/teacher_members.json (for BENCHMARKS.md); each run adds (or replaces) one
member and records the latest ensemble evaluation.

    python bench/teacher_members.py --run runs/member_a \
        --zoo zoo/student_l_ls0_s1_modelnet40_cpu.pt --eval EVAL_DIR/eval_test.json \
        --command "..." --eval-command "..." --machine "..."
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pointkd.safe_io import file_sha256


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="the member's run directory")
    ap.add_argument("--zoo", required=True, help="its zoo copy (fp16 weights)")
    ap.add_argument("--eval", required=True, help="eval_test.json of the ensemble evaluation")
    ap.add_argument("--command", required=True, help="the member's training command")
    ap.add_argument("--eval-command", required=True)
    ap.add_argument("--machine", required=True)
    ap.add_argument("--json", default="bench/results/teacher_members.json")
    args = ap.parse_args()
    history = json.loads((Path(args.run) / "metrics.json").read_text())
    best = max(history, key=lambda r: (r.get("val_oa", -1), -r["epoch"]))
    report = json.loads(Path(args.eval).read_text())
    member = {"zoo": args.zoo, "sha256": file_sha256(args.zoo), "command": args.command,
              "epochs": len(history), "best_epoch": best["epoch"], "val_oa": best["val_oa"],
              "train_core_hours": sum(r["epoch_seconds"] for r in history) / 3600,
              "machine": args.machine}
    # one entry per member (by its zoo file): a later member joins the earlier ones
    path = Path(args.json)
    earlier = json.loads(path.read_text())["members"] if path.is_file() else []
    members = [m for m in earlier if m["zoo"] != args.zoo] + [member]
    out = {"members": members, "ensemble": {
        "command": args.eval_command, "members": report["members"],
        "single_view": {k: report["single_view"][k] for k in ("oa", "macc", "count")},
        "voting": {k: report["voting"][k] for k in ("votes", "oa", "macc")}
        if "voting" in report else None}}
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
