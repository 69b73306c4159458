"""Record store: written once from the teacher, read by every student. Format: docs/records.md.

Storage only: no models and no teachers here (the `record` stage, `pointkd.stages.record`,
runs the teachers and hands rows to `ShardWriter`; offline KD replays rows through
`pointkd.training.sources.RecordReplay`).

- `ShardWriter`             append rows to a shard, crash-safe, with per-batch checksums
- `open_records(dir, data)` memory-mapped `RecordSet`; `.rows(idx)` -> `RecordBatch`
- `read_manifest(dir)`, `info(dir)`, `record_stats(dir)`  what a record set holds
"""

from pointkd.records.format import (
    CLOUD_BYTES,
    FORMAT_VERSION,
    decode_logits,
    encode_logits,
    row_dtype,
)
from pointkd.records.manifest import read_manifest, shard_name
from pointkd.records.reader import RecordBatch, RecordSet, open_records
from pointkd.records.verify import info
from pointkd.records.writer import ShardWriter

__all__ = ["info", "open_records", "read_manifest", "RecordSet", "RecordBatch", "ShardWriter",
           "row_dtype", "encode_logits", "decode_logits", "shard_name", "CLOUD_BYTES",
           "FORMAT_VERSION"]
