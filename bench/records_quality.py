"""How good are a record set's targets? Accuracy and NLL of the stored teacher logits against
the labels, on the replayed copies of the shapes the teacher never trained on (its validation
split) and on all rows. Compares record sets row for row (same seed: the same clouds), e.g.
single-view against `record --votes N`.

    python bench/records_quality.py --records zoo/records_student_l_modelnet40_k20 \
        --records /tmp/vrec/mn40_v4 --data ../shared/data/modelnet40_1024 --copies 1 \
        --json bench/results/records_quality_votes.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from machine import cpu_name  # bench/machine.py (script dir on sys.path)

from pointkd.data import load_split, stratified_split
from pointkd.records import open_records


def target_quality(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    return {"rows": len(labels),
            "acc": float((logits.argmax(1) == labels).float().mean()),
            "nll": float(F.cross_entropy(logits, labels)),
            "top_prob": float(logits.softmax(1).amax(1).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", action="append", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--copies", type=int, default=1, help="rows of copies k < this")
    ap.add_argument("--val-fraction", type=float, default=0.1,
                    help="the teacher's validation split (its config's data.val_fraction)")
    ap.add_argument("--split-seed", type=int, default=0, help="the teacher's train.seed")
    ap.add_argument("--note", default="", help="how the record sets were made, for the table")
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    sets = [open_records(r) for r in args.records]
    ds = load_split(args.data, "train", num_points=sets[0].manifest["data"]["num_points"])
    _, held_out = stratified_split(ds.labels, args.val_fraction, args.split_seed)
    n = len(ds)
    labels = torch.from_numpy(ds.labels.astype(np.int64))
    groups = {"held_out": np.concatenate([held_out + k * n for k in range(args.copies)]),
              "all": np.arange(args.copies * n)}
    first, out_sets = {}, []
    for path, rs in zip(args.records, sets, strict=True):
        m = rs.manifest
        if rs.k < args.copies:
            sys.exit(f"{path}: K {rs.k} < --copies {args.copies}")
        entry = {"records": path, "k": rs.k, "votes": m["logits"].get("votes", 0),
                 "teachers": [t["file"] for t in m["teachers"]],
                 "recording": m.get("recording", {})}
        for name, rows in groups.items():
            batch = rs.rows(rows)
            ref = first.setdefault(name, (batch.params, batch.seeds))
            if not (torch.equal(batch.params, ref[0]) and torch.equal(batch.seeds, ref[1])):
                sys.exit(f"{path}: its rows are other clouds than {args.records[0]}'s")
            entry[name] = target_quality(batch.logits, labels[batch.sample])
        out_sets.append(entry)
    argv = sys.argv[:sys.argv.index("--note")] + sys.argv[sys.argv.index("--note") + 2:] \
        if "--note" in sys.argv else sys.argv  # the note is reported beside the command
    out = {"data": args.data, "copies": args.copies, "held_out_shapes": len(held_out),
           "sets": out_sets, "note": args.note, "machine": cpu_name(),
           "command": "python " + " ".join(argv)}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    for e in out_sets:
        print(f"{e['records']} (votes {e['votes']}): held-out acc "
              f"{100 * e['held_out']['acc']:.2f}% nll {e['held_out']['nll']:.4f}; "
              f"all acc {100 * e['all']['acc']:.2f}% nll {e['all']['nll']:.4f}")


if __name__ == "__main__":
    main()
