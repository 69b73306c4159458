"""Error types. Every bad-input problem raises a `PointKDError` with a one-line message;
the CLI prints it and exits with `exit_code` (2) — never a traceback.

Warnings follow the same promise (`quiet_warnings`): the CLI drops library warnings a user
cannot act on (torch UserWarnings, TracerWarnings during ONNX export, numpy RuntimeWarnings)
and prints pointkd's own `PointKDWarning`s as one line each."""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator


class PointKDError(Exception):
    """Base class for expected, user-facing errors."""

    exit_code = 2


class DataError(PointKDError):
    """Missing, empty, corrupt or inconsistent point-cloud data."""


class ConfigError(PointKDError):
    """Unknown config keys, wrong types, bad values."""


class ModelError(PointKDError):
    """Unknown model name, bad checkpoint, wrong class count."""


class RecordError(PointKDError):
    """A record set that is incomplete, corrupt, or made for other inputs."""


class OutputError(ConfigError):
    """An output directory that must not be written: not pointkd's, in use, or an input."""


class PointKDWarning(UserWarning):
    """Something the user can act on that does not stop the command (one line)."""


def _one_line(message, category, filename, lineno, file=None, line=None) -> None:
    text = " ".join(str(message).split())
    print(f"pointkd: warning: {text}", file=file or sys.stderr)


@contextlib.contextmanager
def quiet_warnings() -> Iterator[None]:
    """For the CLI: only `PointKDWarning`s are shown, one line each. Explicit `python -W` or
    PYTHONWARNINGS settings still apply."""
    with warnings.catch_warnings():
        if not sys.warnoptions:
            warnings.simplefilter("ignore")
            warnings.simplefilter("default", PointKDWarning)
        warnings.showwarning = _one_line
        yield
