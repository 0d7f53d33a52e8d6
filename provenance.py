"""What produced a result: library versions and this checkout's git commit (recorded in every summary.json)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch


def library_versions() -> dict[str, str | None]:
    import transformers

    return {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
            "latentmas_commit": project_commit()}


def project_commit() -> str | None:
    """This checkout's git commit ("+dirty" with uncommitted changes), None outside a git checkout."""
    import subprocess

    git = ["git", "-C", str(Path(__file__).resolve().parent)]
    try:
        head = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(git + ["status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
