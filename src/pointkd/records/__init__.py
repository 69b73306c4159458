"""Record store: write once with the teacher, read by every student. See docs/records.md."""

from pointkd.records.recorder import info, record, verify
from pointkd.records.store import (
    RecordBatch,
    RecordSet,
    decode_logits,
    encode_logits,
    open_records,
    read_manifest,
    row_dtype,
)

__all__ = ["record", "verify", "info", "open_records", "read_manifest", "RecordSet",
           "RecordBatch", "row_dtype", "encode_logits", "decode_logits"]
