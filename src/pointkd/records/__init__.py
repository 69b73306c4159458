"""Record store: write once with the teacher, read by every student. Format: docs/records.md.

- `record(...)`             run the teacher(s) over K augmented copies of every shape
- `open_records(dir, data)` memory-mapped `RecordSet`; `.rows(idx)` -> `RecordBatch`
- `verify(dir, ...)`, `info(dir)`  for `pointkd records verify|info`
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
