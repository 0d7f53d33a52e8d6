"""LatentMAS research CLI: python run.py --method latent_mas --task gsm8k [...] (see README.md, "Flags").

The command line is parsed and checked here (flags.py declares every setting once); the run itself is
experiment.run_experiment, which scripts and the Python API call too.
"""

from __future__ import annotations

import sys

from errors import Interrupted, Terminated, one_line_errors
# The run's configuration (flags.py); the names are run.py's public interface too (tests and users call
# run.parse_args, run.build_parser, run.validate).
from flags import build_parser, parse_args, parse_size, run_settings, validate  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    validate(args)
    from experiment import run_experiment

    run_experiment(args, command=sys.argv if argv is None else ["run.py", *argv])
    return 0


def _terminate(signum, frame):
    raise Terminated


def cli() -> int:
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    try:
        return one_line_errors(main, "run.py")
    except Interrupted as stop:  # run_experiment has marked the summary and said where the results are
        return 143 if stop.terminated else 130
    except KeyboardInterrupt as stop:  # before the first item (the model loading): nothing written yet
        print(f"run.py: {'terminated' if isinstance(stop, Terminated) else 'interrupted'} before the first item; "
              "nothing to resume", file=sys.stderr)
        return 143 if isinstance(stop, Terminated) else 130


if __name__ == "__main__":
    sys.exit(cli())
