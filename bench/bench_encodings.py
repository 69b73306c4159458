"""How much of the teacher's signal each record encoding keeps (issue #6, compression ablation).

Replays N rows of a real record set through its teacher to get float32 logits, then encodes and
decodes them with each logits encoding exactly as `pointkd record` / the reader do, and reports
bytes per row and the distillation target's error: KL(p_fp32 ‖ p_decoded) at the KD temperature,
max |Δ logit|, top-1 agreement. Also checks that the stored rows decode to what re-encoding the
replayed logits gives (the record set is what the teacher said).

    python bench/bench_encodings.py --records runs/mn40/rec_pointnet_k10 \
        --teacher zoo/pointnet_modelnet40_cpu.pt --rows 4096
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch
import torch.nn.functional as F
from machine import cpu_name

from pointkd import augment
from pointkd.checkpoint import load_model
from pointkd.data import load_split
from pointkd.records import CLOUD_BYTES, open_records, row_dtype
from pointkd.records.format import decode_logits, encode_logits

ENCODINGS = [("fp32", 0), ("fp16", 0), ("int8", 0), ("topk", 10), ("topk", 5), ("topk", 3)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", required=True)
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--data", default="../shared/data/modelnet40_1024")
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--tau", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default="bench/results/encodings.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    rs = open_records(args.records)
    data = load_split(args.data, "train", num_points=rs.manifest["data"]["num_points"])
    teacher, _ = load_model(args.teacher, torch.device("cpu"))
    rows = np.sort(np.random.default_rng(0).choice(len(rs), args.rows, replace=False))
    batch = rs.rows(rows)
    points = torch.from_numpy(data.points)
    with torch.inference_mode():
        z = torch.cat([teacher(augment.apply(points[batch.sample[i:i + 256]],
                                             batch.params[i:i + 256], batch.seeds[i:i + 256],
                                             rs.spec))
                       for i in range(0, len(rows), 256)]).float().numpy()
    c = z.shape[1]
    stored_enc = rs.encoding
    ref_rows = np.zeros(len(z), row_dtype(c, stored_enc, rs.topk))
    encode_logits(ref_rows, z[:, None], stored_enc, rs.topk)
    stored_matches = bool(np.array_equal(decode_logits(ref_rows, stored_enc, rs.topk, c)[:, 0],
                                         batch.logits.numpy()))

    p = F.log_softmax(torch.from_numpy(z) / args.tau, -1)
    out = []
    for enc, k in ENCODINGS:
        dt = row_dtype(c, enc, k)
        r = np.zeros(len(z), dt)
        encode_logits(r, z[:, None], enc, k)
        dec = torch.from_numpy(decode_logits(r, enc, k, c)[:, 0])
        q = F.log_softmax(dec / args.tau, -1)
        kl = (p.exp() * (p - q)).sum(-1)
        out.append({"encoding": enc if not k else f"top-{k}", "bytes_per_row": dt.itemsize,
                    "vs_cloud": CLOUD_BYTES / dt.itemsize,
                    "kl_tau_mean": float(kl.mean()), "kl_tau_max": float(kl.max()),
                    "max_abs_logit_diff": float((dec - torch.from_numpy(z)).abs().max()),
                    "top1_agreement": float((dec.argmax(1) == torch.from_numpy(z).argmax(1))
                                            .float().mean())})
        print(out[-1], flush=True)
    result = {"command": "python " + " ".join(sys.argv), "machine": cpu_name(),
              "records": args.records, "teacher": args.teacher, "rows": int(len(rows)),
              "tau": args.tau, "classes": c, "stored_encoding": stored_enc,
              "stored_rows_equal_reencoded_replay": stored_matches, "encodings": out}
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    print(f"stored rows == re-encoded replay: {stored_matches}; wrote {args.json}")


if __name__ == "__main__":
    main()
