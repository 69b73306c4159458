"""The pipeline's stages. Each module holds one stage's `run(cfg)`, which does the work and
returns a result whose `text()` is what the CLI prints; the configs are declared in
`pointkd.config` (no torch, so the CLI builds its options without importing a stage):

- `train`     train a model, or distill a student (offline from records, or online)
- `record`    run the teachers once over K augmented copies of every shape; store logits
- `records`   inspect a record set: info, verify, stats
- `evaluate`  OA, mAcc, per-class accuracy, confusion, params, FLOPs, latency
- `predict`   classify point-cloud files
- `export`    ONNX with a parity check
- `demo`      the whole pipeline on the synthetic set, calling the stages above
"""
