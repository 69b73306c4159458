"""The pipeline's stages. Each module holds one stage's config (a dataclass whose fields,
ranges and help are declared once), a `run(cfg)` that does the work and returns a result,
and that result's `text()` (what the CLI prints):

- `train`     train a model, or distill a student (offline from records, or online)
- `record`    run the teachers once over K augmented copies of every shape; store logits
- `records`   inspect a record set: info, verify, stats
- `evaluate`  OA, mAcc, per-class accuracy, confusion, params, FLOPs, latency
- `predict`   classify point-cloud files
- `export`    ONNX with a parity check
- `data`      inspect, preview and convert datasets
- `demo`      the whole pipeline on the synthetic set, calling the stages above
"""
