"""Record store: written once from the teacher, read by every student. Format: docs/records.md.

Storage only; the teachers run in `pointkd.teacher_inference`.

- `record(RecordConfig)`    store the teachers' logits for K augmented copies of every shape
- `open_records(dir, data)` memory-mapped `RecordSet`; `.rows(idx)` -> `RecordBatch`
- `verify(dir, ...)`, `info(dir)`  for `pointkd records verify|info`
- `replay.RecordReplay`     offline KD's target source: rows -> augmented batches + logits
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
from pointkd.records.verify import info, verify
from pointkd.records.writer import ShardWriter, record

__all__ = ["record", "verify", "info", "open_records", "read_manifest", "RecordSet",
           "RecordBatch", "ShardWriter", "row_dtype", "encode_logits", "decode_logits",
           "shard_name", "CLOUD_BYTES", "FORMAT_VERSION"]
