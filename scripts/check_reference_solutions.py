"""Run the MBPP+ and HumanEval+ canonical solutions through the scoring harness (code_check.py), in parallel.

Expected: MBPP+ 378/378, HumanEval+ 163/164 (HumanEval/32 fails upstream: its OriginFmt test calls
`_poly(*candidate(*inp), inp)`, a TypeError for the canonical float result).

    python scripts/check_reference_solutions.py --data_dir ../shared/data [--workers N]
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
from code_check import check_code  # noqa: E402
from sandbox import sandbox_mechanism  # noqa: E402

EXPECTED_FAILURES = {"HumanEval/32"}


def check(task: str, data_dir: str | None, workers: int) -> tuple[int, int, list]:
    """Check every canonical solution of `task` as a candidate is checked; (passed, total, [(task_id, why)])."""
    items = load_task(task, data_dir=data_dir)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        verdicts = list(pool.map(lambda item: check_code(item["solution"], item), items))
    failures = [(it["id"], v.failure or "") for it, v in zip(items, verdicts) if not v.passed]
    return sum(v.passed for v in verdicts), len(items), failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(ap, "data_dir")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--tasks", nargs="+", default=["mbppplus", "humanevalplus"])
    args = ap.parse_args()
    data_dir = resolve_data_dir(args.data_dir)
    print(f"sandbox mechanism: {sandbox_mechanism()}; workers: {args.workers}")
    unexpected = 0
    for task in args.tasks:
        start = time.monotonic()
        passed, total, failures = check(task, data_dir, args.workers)
        print(f"{task}: {passed}/{total} passed in {time.monotonic() - start:.1f} s")
        for task_id, error in failures:
            note = " (expected: broken upstream test)" if task_id in EXPECTED_FAILURES else ""
            print(f"  FAIL {task_id}{note}: {error[:200]}")
            unexpected += task_id not in EXPECTED_FAILURES
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
