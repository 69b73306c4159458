"""One training loop for teachers, online KD and offline KD; they differ only in where the
target comes from.

- `loop`         `Trainer` (one epoch of steps), the LR schedule, `fit(cfg)`
- `sources`      every `TargetSource`: augmented shapes, an online teacher, record replay
- `self_target`  NWSD's z_self (the student's past logits, or an EMA copy)
- `losses`       CE + alpha KD + beta NWSD
- `resume`       what must match for `--resume`
- `outputs`      checkpoint metadata, metrics files, curves, the final test, console lines
"""
