"""Bad input, reported the same way by every entry point: one line on stderr and exit code 2, never a traceback.

This module imports nothing heavy, so `--help` and argument errors answer before torch is imported.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable


class InputError(Exception):
    """Bad input (a flag, a file, a model name, a data folder): the message is one line for the user."""


class UsageError(InputError):
    """A flag or flag combination that cannot run."""


class DataError(InputError):
    """A benchmark's data is missing or malformed."""


class PromptError(InputError):
    """A prompt file is missing, malformed or names unknown roles."""


class ModelLoadError(InputError):
    """A model could not be found or loaded."""


class ModelStoreError(InputError):
    """A packaged model could not be assembled, verified or converted."""


class ReportError(InputError):
    """A run folder given to report.py is missing or malformed."""


class VLLMUnavailable(InputError):
    """vLLM or a CUDA GPU is missing."""


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are UsageErrors (one line, exit 2 through `one_line_errors`)."""

    def error(self, message: str):
        raise UsageError(message)


class DistributedError(InputError):
    """A launch (torchrun / accelerate) that cannot run, or ranks that do not agree."""


def one_line_errors(main_fn: Callable[[], int], prog: str, also: tuple[type[BaseException], ...] = ()) -> int:
    """Run an entry point; an InputError (or one of `also`) becomes `prog: error: message` on stderr, exit 2.
    Under a launcher only rank 0 says it (the ranks share the input), except a model that one machine cannot load."""
    try:
        return main_fn()
    except (InputError, *also) as exc:
        rank = os.environ.get("RANK", "0")
        if rank in ("0", ""):
            print(f"{prog}: error: {exc}", file=sys.stderr)
        elif isinstance(exc, ModelLoadError):  # this machine's alone, maybe (its GPU, its disk)
            print(f"{prog}: error (rank {rank}): {exc}", file=sys.stderr)
        return 2


def check_output_folder(folder: Path, flag: str) -> None:
    """A folder an entry point will create and write (`flag` names it), checked before any work: an existing file,
    a file on the way, or a folder without write permission is one line, not a traceback after a model load."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{flag} {folder} is a file, not a folder; choose a folder for the results")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{flag} {folder}: {existing} is a file, so the folder cannot be created there")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {folder}: no permission to write in {existing}")


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, a scheduler's stop), raised by the entry points' handler: handled as Ctrl-C is, exit 143."""


class Interrupted(KeyboardInterrupt):
    """A run stopped (Ctrl-C or SIGTERM) after its summary was first written: what was finished is on disk in
    out_dir and the summary says "interrupted"; terminated: it was SIGTERM."""

    def __init__(self, out_dir: Path, terminated: bool) -> None:
        super().__init__(str(out_dir))
        self.out_dir, self.terminated = out_dir, terminated
