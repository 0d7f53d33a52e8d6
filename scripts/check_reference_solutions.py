"""Run the MBPP+ and HumanEval+ canonical solutions through the scoring harness (sandbox), in parallel.

Expected: MBPP+ 378/378, HumanEval+ 163/164 (HumanEval/32 fails upstream: its OriginFmt test calls
`_poly(*candidate(*inp), inp)`, a TypeError for the canonical float result).

    python scripts/check_reference_solutions.py --data_dir ../shared/data [--workers N] [--timeout S]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data import load_task, resolve_data_dir  # noqa: E402
from flags import add_flags  # noqa: E402
from sandbox import run_sandboxed, sandbox_mechanism  # noqa: E402

EXPECTED_FAILURES = {"HumanEval/32"}


def check(task: str, data_dir: str | None, workers: int, timeout: float | None) -> tuple[int, int, list]:
    """Run every canonical solution of `task` with its tests; (passed, total, [(task_id, last error line)])."""
    items = load_task(task, data_dir=data_dir)

    def run(item: dict):
        # Exactly what score_code runs: candidate + "\n" + gold, under the item's time limit.
        return run_sandboxed(item["solution"] + "\n" + item["gold"], timeout=timeout or item["timeout"])

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(run, items))
    failures = [(it["id"], ((r.error or "").strip().splitlines() or [""])[-1]) for it, r in zip(items, results)
                if not r.ok]
    # Closest to their time limit: what to watch when a slower or busier machine starts timing out.
    tightest = sorted(zip(items, results), key=lambda p: -p[1].elapsed / (timeout or p[0]["timeout"]))[:3]
    print("  tightest runs: " + ", ".join(f"{it['id']} {r.elapsed:.1f}/{timeout or it['timeout']:.0f} s"
                                          for it, r in tightest))
    return sum(r.ok for r in results), len(items), failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(ap, "data_dir")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--timeout", type=float, default=None, help="seconds per program (default: each item's own)")
    ap.add_argument("--tasks", nargs="+", default=["mbppplus", "humanevalplus"])
    args = ap.parse_args()
    data_dir = resolve_data_dir(args.data_dir)
    print(f"sandbox mechanism: {sandbox_mechanism()}; workers: {args.workers}; timeout: {args.timeout or 'per item'}")
    unexpected = 0
    for task in args.tasks:
        start = time.monotonic()
        passed, total, failures = check(task, data_dir, args.workers, args.timeout)
        print(f"{task}: {passed}/{total} passed in {time.monotonic() - start:.1f} s")
        for task_id, error in failures:
            note = " (expected: broken upstream test)" if task_id in EXPECTED_FAILURES else ""
            print(f"  FAIL {task_id}{note}: {error[:200]}")
            unexpected += task_id not in EXPECTED_FAILURES
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
