"""The real memory peak of a run, reported beside the KV bytes it accounts for: the CUDA allocator's peak on a GPU,
the process's peak resident set size on CPU (Linux VmHWM, which writing "5" to /proc/self/clear_refs resets)."""

from __future__ import annotations

import resource
from pathlib import Path

import torch


def _status_bytes(field: str) -> int | None:
    """A "VmRSS:  1234 kB"-style field of /proc/self/status, in bytes (None off Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak(device: torch.device) -> None:
    """Start a new peak measurement (best effort: without /proc the CPU peak is the process's lifetime peak)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def memory_now(device: torch.device) -> dict:
    """{"kind", "current_bytes", "peak_bytes"}: CUDA allocator bytes, or the process's resident set size."""
    if device.type == "cuda":
        return {"kind": "cuda_allocator", "current_bytes": torch.cuda.memory_allocated(device),
                "peak_bytes": torch.cuda.max_memory_allocated(device)}
    peak = _status_bytes("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"kind": "process_rss", "current_bytes": _status_bytes("VmRSS"), "peak_bytes": peak}
