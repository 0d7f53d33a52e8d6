"""Run the README's shell commands as written, so that they cannot go stale.

Every ```bash block of README.md carries a marker on the line before its fence, saying who runs it:

    <!-- readme-check: cheap -->          run by the default test suite (tests/test_readme_commands.py): seconds
    <!-- readme-check: ci -->             run by the CI (scripts/ci_reproduction.sh): minutes on a CPU
    <!-- readme-check: skip: REASON -->   not run here, for the reason given (a GPU, Qwen3 weights, hours of CPU)

A bash block without a marker is an error, so a new command is either run or skipped with a stated reason.
Blocks run from the repository root, as `bash -euo pipefail -c BLOCK`, with this Python's folder first on PATH
(so `python` is the interpreter of the environment that runs the check).

    python scripts/check_readme_commands.py --list
    python scripts/check_readme_commands.py --run cheap      # or: --run ci
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIERS = ("cheap", "ci")
MARKER = re.compile(r"<!--\s*readme-check:\s*(cheap|ci|skip:\s*(?P<reason>\S.*?))\s*-->")


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    tier: str  # "cheap", "ci" or "skip"
    reason: str  # why a skipped block is not run ("" otherwise)
    text: str


class ReadmeError(Exception):
    """A bash block without a readme-check marker, or an unclosed fence."""


def bash_blocks(readme: str) -> list[Block]:
    """The ```bash blocks of the README with their markers; a block without one raises ReadmeError."""
    lines = readme.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() != "```bash":
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        if end is None:
            raise ReadmeError(f"README.md line {i + 1}: a ```bash block is never closed")
        marker = MARKER.fullmatch(lines[i - 1].strip()) if i else None
        if marker is None:
            raise ReadmeError(f"README.md line {i + 1}: a ```bash block without a '<!-- readme-check: cheap|ci|"
                              "skip: REASON -->' line before it")
        tier = "skip" if marker.group("reason") else marker.group(1)
        blocks.append(Block(i + 1, tier, marker.group("reason") or "", "\n".join(lines[i + 1:end])))
        i = end + 1
    return blocks


def run_block(block: Block) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(["bash", "-euo", "pipefail", "-c", block.text], cwd=ROOT, env=env, text=True,
                          capture_output=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run the README's bash blocks of one tier, as written.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--list", action="store_true", help="list every block with its tier (or why it is skipped)")
    what.add_argument("--run", choices=TIERS, help="run the blocks of this tier")
    args = p.parse_args(argv)
    try:
        blocks = bash_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    except ReadmeError as exc:
        print(f"check_readme_commands.py: error: {exc}", file=sys.stderr)
        return 2
    if args.list:
        for b in blocks:
            first = b.text.splitlines()[0] if b.text else ""
            print(f"line {b.line}: {b.tier}{': ' + b.reason if b.reason else ''}: {first}")
        return 0
    failed = 0
    for b in (b for b in blocks if b.tier == args.run):
        print(f"+ README.md line {b.line}:\n{b.text}", flush=True)
        start = time.monotonic()
        result = run_block(b)
        print(result.stdout[-4000:], end="")
        print(result.stderr[-4000:], end="", file=sys.stderr)
        print(f"= exit {result.returncode} after {time.monotonic() - start:.0f} s", flush=True)
        failed += result.returncode != 0
    if failed:
        print(f"check_readme_commands.py: {failed} README block(s) of tier '{args.run}' failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
