"""Choose the teacher ensemble on validation data, then report it on the test split.

Every candidate (each member alone, every combination of two or more, with and without
voting) is scored on the validation shapes the members held out (`pointkd eval --split val
--val-seed S`: the members trained with `data.split_seed=S`); the candidate with the lowest
validation NLL at its best temperature is the choice, and every candidate's test OA is
reported beside it. NLL, not OA, decides: OA on ~1,000 validation shapes has a standard error
near 0.9 points and cannot separate candidates a few shapes apart, while NLL scores every
shape's whole distribution, which is also what a student distils (the teacher's
probabilities, not its top-1). A member trained on another split (e.g. the zoo teacher,
split seed 0) has seen most of those validation shapes: its validation scores are marked and
it is compared on test only.

    python bench/teacher_ensemble.py --data ../shared/data/modelnet40_1024 --val-seed 1 \
        --member A=zoo/student_l_ls0_s1_modelnet40_cpu.pt --member B=... \
        --other zoo=zoo/student_l_modelnet40_cpu.pt --votes 0 2 4
writes bench/results/teacher_ensemble.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch
from machine import cpu_name  # bench/machine.py (script dir on sys.path)

from pointkd.checkpoint import load_model
from pointkd.config.stages import EvalConfig
from pointkd.metrics import classification_metrics, predict_logits, vote_logits
from pointkd.stages.evaluate import _evaluated_shapes, fit_classes


def member_logits(path: str, data: str, split: str, votes: int, val_seed: int
                  ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(logits, labels, classes) of one checkpoint on a split, exactly as `pointkd eval`
    computes them (an ensemble's are the mean of its members', in the order given)."""
    model, meta = load_model(path, "cpu")
    ds = _evaluated_shapes(EvalConfig([path], data, split=split, val_seed=val_seed),
                           meta.get("num_points"))
    model = fit_classes(model, meta, path, ds.class_names, data)
    z = (vote_logits(model, ds.points, votes, 32, torch.device("cpu")) if votes else
         predict_logits(model, ds.points, 32, "cpu"))
    return z, torch.as_tensor(ds.labels), ds.num_classes


def score(zs: list[torch.Tensor], labels: torch.Tensor, classes: int) -> dict:
    """OA, mAcc and NLL (mean cross-entropy, nats) of the members' mean logits, as they are
    and at the temperature (0.5-4) that minimises it: the student sees softmax(z / τ) with
    τ its own setting, so the calibrated NLL is what the ensemble knows beyond its top-1,
    without penalising a member that is merely over-confident."""
    z = torch.stack(zs).mean(0)
    m = classification_metrics(z.argmax(1), labels.numpy(), classes)
    nll = float(torch.nn.functional.cross_entropy(z.float(), labels.long()))
    temps = [t / 10 for t in range(5, 41)]
    calibrated = [float(torch.nn.functional.cross_entropy(z.float() / t, labels.long()))
                  for t in temps]
    best = min(range(len(temps)), key=calibrated.__getitem__)
    return {"oa": m["oa"], "macc": m["macc"], "nll": nll, "nll_calibrated": calibrated[best],
            "temperature": temps[best], "count": len(labels)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/modelnet40_1024")
    ap.add_argument("--val-seed", type=int, default=1)
    ap.add_argument("--member", action="append", required=True,
                    help="NAME=checkpoint trained with data.split_seed = --val-seed")
    ap.add_argument("--other", action="append", default=[],
                    help="NAME=checkpoint trained on another split (test only)")
    ap.add_argument("--votes", type=int, nargs="+", default=[0, 4])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=str(Path(__file__).parent / "results" /
                                          "teacher_ensemble.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    members = dict(m.split("=", 1) for m in args.member)
    others = dict(m.split("=", 1) for m in args.other)
    names = list(members) + list(others)
    every = {**members, **others}
    t0 = time.perf_counter()
    cache = {(n, split, v): member_logits(every[n], args.data, split, v, args.val_seed)
             for n in names for split in ("val", "test") for v in args.votes}
    candidates = []
    for r in range(1, len(names) + 1):
        for combo in itertools.combinations(names, r):
            paths = [every[n] for n in combo]
            seen_val = any(n in others for n in combo)
            for votes in args.votes:
                c = {"members": list(combo), "checkpoints": paths, "votes": votes,
                     "val_includes_training_shapes": seen_val,
                     "command": f"pointkd eval {' '.join(paths)} --data {args.data} "
                                f"--split SPLIT --val-seed {args.val_seed} --votes {votes} "
                                "--no-latency"}
                for split in ("val", "test"):
                    parts = [cache[(n, split, votes)] for n in combo]
                    c[split] = score([z for z, _, _ in parts], parts[0][1], parts[0][2])
                candidates.append(c)
                print(f"{'+'.join(combo):>12} votes {votes}: val {100 * c['val']['oa']:.2f}% "
                      f"(NLL {c['val']['nll']:.4f}, {c['val']['nll_calibrated']:.4f} at T "
                      f"{c['val']['temperature']}) "
                      f"test {100 * c['test']['oa']:.2f}%"
                      + ("  (val seen in training by a member)" if seen_val else ""),
                      flush=True)
    # how differently the members err (test): the ceiling an ensemble of them could reach
    pairs = []
    for a, b in itertools.combinations(names, 2):
        (za, y, _), (zb, _, _) = cache[(a, "test", 0)], cache[(b, "test", 0)]
        pa, pb = za.argmax(1), zb.argmax(1)
        pairs.append({"members": [a, b], "agree": float((pa == pb).float().mean()),
                      "either_right": float(((pa == y) | (pb == y)).float().mean())})
    preds = torch.stack([cache[(n, "test", 0)][0].argmax(1) for n in names])
    y = cache[(names[0], "test", 0)][1]
    diversity = {"pairs": pairs, "any_right": float((preds == y).any(0).float().mean())}
    fair = [c for c in candidates if not c["val_includes_training_shapes"]]
    chosen = min(fair, key=lambda c: (c["val"]["nll_calibrated"], len(c["members"]),
                                      c["votes"]))
    out = {"purpose": "the teacher ensemble chosen by NLL on the members' validation shapes "
                      f"(split seed {args.val_seed}), every candidate's test OA beside it",
           "data": args.data, "val_seed": args.val_seed, "members": members, "others": others,
           "machine": f"{cpu_name()}, {args.threads} thread(s)", "chosen": chosen,
           "seconds": round(time.perf_counter() - t0, 1), "diversity_test": diversity,
           "candidates": candidates}
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    print(f"chosen on validation NLL: {'+'.join(chosen['members'])} votes {chosen['votes']}: "
          f"val {100 * chosen['val']['oa']:.2f}%, test {100 * chosen['test']['oa']:.2f}%")


if __name__ == "__main__":
    main()
