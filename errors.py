"""Bad input, reported the same way by every entry point: one line on stderr and exit code 2, never a traceback.

This module imports nothing heavy, so `--help` and argument errors answer before torch is imported.
"""

from __future__ import annotations

import argparse
import sys
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


def one_line_errors(main_fn: Callable[[], int], prog: str, also: tuple[type[BaseException], ...] = ()) -> int:
    """Run an entry point; an InputError (or one of `also`) becomes `prog: error: message` on stderr, exit 2."""
    try:
        return main_fn()
    except (InputError, *also) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
