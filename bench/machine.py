"""What the bench scripts record about the machine they ran on."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name and, on x86, its widest vector ISA, e.g. "AMD EPYC (AVX-512)":
    VMs of one model name differ (an EPYC with AVX2 only ran student_s's ONNX graph 2.9x
    and its eager forward 6.5x slower than one with AVX-512), so a timing names both."""
    name, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine()
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else ""
    return f"{name} ({isa})" if isa else name


def native_ops_used() -> bool:
    """Whether pointkd's C++ kernels are in use in this process (on by default; built and
    checked on first use, `POINTKD_NATIVE_OPS=0` turns them off)."""
    from pointkd.models.kernels import native

    return native.available()
