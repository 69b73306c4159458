"""Error types. Every bad-input problem raises a `PointKDError` with a one-line message;
the CLI prints it and exits with `exit_code` (2) — never a traceback."""


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
