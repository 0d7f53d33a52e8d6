"""Run the README's commands and Python examples as written, so that they cannot go stale.

Every ```bash and ```python block of README.md carries a marker on the line before its fence, saying who runs it:

    <!-- readme-check: cheap -->          run by the default test suite (tests/test_readme_commands.py): seconds
    <!-- readme-check: ci -->             run by the CI (scripts/ci_reproduction.sh): minutes on a CPU
    <!-- readme-check: skip: REASON -->   not run here, for the reason given (a GPU, Qwen3 weights, hours of CPU)

A block without a marker is an error, so a new command or example is either run or skipped with a stated reason.

Bash blocks run from the repository root, as `bash -euo pipefail -c BLOCK`, with this Python's folder first on PATH
(so `python` is the interpreter of the environment that runs the check); they pass when they exit 0.

Python blocks run the way the README documents for a user's own script: saved as a file in a fresh temporary
folder outside the checkout, run by this Python with that folder as the working directory and the checkout as
PYTHONPATH. A python block that is run must be followed by the ```text block of what it prints (only blank lines
and one line starting "It prints" between them); it passes when it exits 0 and its stdout equals that block.
Where a printed number varies between machines (a time in seconds), the README writes `<seconds>` in its place,
which matches any decimal number there and nothing else; every other character must match exactly (stderr, where
models report loading, is not compared).

    python scripts/check_readme_commands.py --list
    python scripts/check_readme_commands.py --run cheap      # or: --run ci
    python scripts/check_readme_commands.py --run ci --line N   # the block at README line N only (see --list)
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIERS = ("cheap", "ci")
LANGUAGES = ("bash", "python")
MARKER = re.compile(r"<!--\s*readme-check:\s*(cheap|ci|skip:\s*(?P<reason>\S.*?))\s*-->")
PLACEHOLDER = "<seconds>"  # stands for a number that varies between machines
NUMBER = r"\d+(?:\.\d+)?"


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    language: str  # "bash" or "python"
    tier: str  # "cheap", "ci" or "skip"
    reason: str  # why a skipped block is not run ("" otherwise)
    text: str
    prints: str | None = None  # a python block's expected stdout (its ```text block); None for bash


class ReadmeError(Exception):
    """A block without a readme-check marker, a run python block without its output, or an unclosed fence."""


def _fence_end(lines: list[str], start: int) -> int:
    end = next((j for j in range(start + 1, len(lines)) if lines[j].strip() == "```"), None)
    if end is None:
        raise ReadmeError(f"README.md line {start + 1}: a {lines[start].strip()} block is never closed")
    return end


def _output_block(lines: list[str], after: int) -> tuple[str, int] | None:
    """The ```text block following line `after` (blank lines and one "It prints" line between), and its end."""
    def next_nonblank(i: int) -> int:
        return next((j for j in range(i, len(lines)) if lines[j].strip()), len(lines))

    i = next_nonblank(after + 1)
    if i < len(lines) and lines[i].startswith("It prints"):
        i = next_nonblank(i + 1)
    if i >= len(lines) or lines[i].strip() != "```text":
        return None
    end = _fence_end(lines, i)
    return "\n".join(lines[i + 1:end]), end


def readme_blocks(readme: str) -> list[Block]:
    """The README's ```bash and ```python blocks with their markers (and a python block's expected output)."""
    lines = readme.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        language = lines[i].strip().removeprefix("```")
        if not lines[i].strip().startswith("```") or language not in LANGUAGES:
            i += 1
            continue
        end = _fence_end(lines, i)
        marker = MARKER.fullmatch(lines[i - 1].strip()) if i else None
        if marker is None:
            raise ReadmeError(f"README.md line {i + 1}: a ```{language} block without a '<!-- readme-check: "
                              "cheap|ci|skip: REASON -->' line before it")
        tier = "skip" if marker.group("reason") else marker.group(1)
        block = Block(i + 1, language, tier, marker.group("reason") or "", "\n".join(lines[i + 1:end]))
        if language == "python" and tier != "skip":
            output = _output_block(lines, end)
            if output is None:
                raise ReadmeError(f"README.md line {i + 1}: a ```python block that is run needs the ```text block "
                                  "of what it prints right after it ('It prints ...' may stand between)")
            block = replace(block, prints=output[0])
            end = output[1]
        blocks.append(block)
        i = end + 1
    return blocks


def run_block(block: Block) -> subprocess.CompletedProcess:
    """Run a block as README.md tells a reader to: bash from the repository root, python as a script of the
    reader's own, in a temporary folder outside the checkout with the checkout on PYTHONPATH."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    if block.language == "bash":
        return subprocess.run(["bash", "-euo", "pipefail", "-c", block.text], cwd=ROOT, env=env, text=True,
                              capture_output=True)
    with tempfile.TemporaryDirectory(prefix="readme-example-") as folder:
        (Path(folder) / "example.py").write_text(block.text + "\n", encoding="utf-8")
        return subprocess.run([sys.executable, "example.py"], cwd=folder, env={**env, "PYTHONPATH": str(ROOT)},
                              text=True, capture_output=True)


def output_mismatch(block: Block, stdout: str) -> str:
    """"" when stdout is what the README says the block prints (`<seconds>` matching any number), else a diff."""
    if block.prints is None:
        return ""
    pattern = NUMBER.join(re.escape(part) for part in block.prints.split(PLACEHOLDER))
    if re.fullmatch(pattern, stdout.rstrip("\n")):
        return ""
    diff = difflib.unified_diff(block.prints.splitlines(), stdout.rstrip("\n").splitlines(),
                                f"README.md line {block.line} (what it prints)", "stdout", lineterm="")
    return "\n".join(diff)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run the README's bash and python blocks of one tier, as written.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--list", action="store_true", help="list every block with its tier (or why it is skipped)")
    what.add_argument("--run", choices=TIERS, help="run the blocks of this tier")
    p.add_argument("--line", type=int, help="with --run: only the block whose fence is on this README line "
                                            "(to refresh one example's output without running the whole tier)")
    args = p.parse_args(argv)
    if args.line is not None and args.list:
        p.error("--line goes with --run")
    try:
        blocks = readme_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    except ReadmeError as exc:
        print(f"check_readme_commands.py: error: {exc}", file=sys.stderr)
        return 2
    if args.list:
        for b in blocks:
            first = b.text.splitlines()[0] if b.text else ""
            print(f"line {b.line}: {b.language} {b.tier}{': ' + b.reason if b.reason else ''}: {first}")
        return 0
    chosen = [b for b in blocks if b.tier == args.run and args.line in (None, b.line)]
    if args.line is not None and not chosen:
        print(f"check_readme_commands.py: error: no '{args.run}' block starts on README.md line {args.line} "
              "(see --list)", file=sys.stderr)
        return 2
    failed = 0
    for b in chosen:
        print(f"+ README.md line {b.line} ({b.language}):\n{b.text}", flush=True)
        start = time.monotonic()
        result = run_block(b)
        mismatch = output_mismatch(b, result.stdout) if result.returncode == 0 else ""
        print(result.stdout[-4000:], end="")
        print(result.stderr[-4000:], end="", file=sys.stderr)
        if mismatch:
            print(f"its output differs from the README's:\n{mismatch}", file=sys.stderr)
        print(f"= exit {result.returncode}{', output differs' if mismatch else ''} after "
              f"{time.monotonic() - start:.0f} s", flush=True)
        failed += result.returncode != 0 or bool(mismatch)
    if failed:
        print(f"check_readme_commands.py: {failed} README block(s) of tier '{args.run}' failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
