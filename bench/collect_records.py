"""Describe a finished record set for BENCHMARKS.md: its manifest facts, `records info`, the
command that recorded it and the machine, as `bench/results/record_sets/<tag>.json`.

    python bench/collect_records.py fp16 runs/mn40/rec_fp16 \
        --command "pointkd record --teacher zoo/pointnet_modelnet40_cpu.pt ... --logits fp16"

With --teacher-eval, the JSON of `pointkd eval ... --out DIR` (DIR/eval_test.json) for the
record set's teacher (e.g. an ensemble) is kept beside it, without its confusion matrix.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from machine import cpu_name

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "record_sets"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tag", help="name the students' `kd@<tag>` modes use")
    ap.add_argument("dir", help="a complete record set")
    ap.add_argument("--command", required=True, help="the `pointkd record` command it came from")
    ap.add_argument("--machine", default=f"{cpu_name()}, 2 cores, 1 torch thread")
    ap.add_argument("--teacher-eval", help="eval_test.json of its teacher (`pointkd eval --out`)")
    ap.add_argument("--teacher-eval-command", default="")
    args = ap.parse_args()

    manifest = json.loads((Path(args.dir) / "manifest.json").read_text())
    if not manifest.get("complete"):
        sys.exit(f"{args.dir} is not a complete record set")
    info = subprocess.run([sys.executable, "-m", "pointkd", "records", "info", args.dir],
                          capture_output=True, text=True, check=True, cwd=REPO).stdout
    rows = sum(s["rows"] for s in manifest["shards"])
    size = sum((Path(args.dir) / s["file"]).stat().st_size for s in manifest["shards"])
    result = {
        "tag": args.tag, "dir": args.dir, "command": args.command, "machine": args.machine,
        "rows": rows, "k": manifest["k"], "bytes_per_row": manifest["bytes_per_row"],
        "bytes": size,
        "logits": manifest["logits"], "teachers": manifest["teachers"],
        "recording": manifest.get("recording"), "records_info": info,
    }
    if args.teacher_eval:
        ev = json.loads(Path(args.teacher_eval).read_text())
        ev["single_view"] = {k: v for k, v in ev["single_view"].items() if k != "confusion"}
        result["teacher_eval"] = {**ev, "command": args.teacher_eval_command}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{args.tag}.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {OUT / f'{args.tag}.json'}: {rows:,} rows, {manifest['bytes_per_row']} B/row")


if __name__ == "__main__":
    main()
