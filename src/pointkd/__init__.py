"""pointkd: offline knowledge distillation for point-cloud classification.

The Python API (`pointkd.api`): `train`, `distill`, `record`, `evaluate`, `predict`,
`export`, `create_model`, `open_records`, `load_config` and the configs `RunConfig`,
`RecordConfig`, `EvalConfig`. They load on first use, so `import pointkd` (and the CLI's
`--help`) stays quick.
"""

from pointkd._version import __version__

_API = ("train", "distill", "record", "evaluate", "predict", "export", "create_model",
        "open_records", "load_config", "RunConfig", "RecordConfig", "EvalConfig")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from pointkd import api

        return getattr(api, name)
    raise AttributeError(f"module 'pointkd' has no attribute {name!r}")
