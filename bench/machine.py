"""What the bench scripts record about the machine they ran on."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def native_ops_used() -> bool:
    """Whether pointkd's C++ kernels are in use in this process (on by default; built and
    checked on first use, `POINTKD_NATIVE_OPS=0` turns them off)."""
    from pointkd.models.kernels import native

    return native.available()
