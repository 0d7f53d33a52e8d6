"""Tests that can fail: every fault of tests/faults.py, injected, must make its catching tests fail.

One pytest subprocess runs every catching test with its own fault applied (conftest.py's FAULT_PLAN). A test that
catches several faults runs once per fault, in further subprocesses. The table (fault, catching test, failed or
not, and the first line of why) is printed at the end of the session and written to fault_table.md in this test's
tmp_path. Without the faults the same tests pass: they are ordinary default-suite tests.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import faults

ROOT = Path(__file__).resolve().parents[1]
FAULT_SITE = Path(__file__).resolve().parent / "fault_site"


VLLM = importlib.util.find_spec("vllm") is not None  # the vLLM catchers run only where vLLM is installed


def catchers(fault: faults.Fault, vllm: bool = VLLM) -> tuple[str, ...]:
    return fault.catchers + (fault.vllm_catchers if vllm else ())


def rounds(table: list[faults.Fault]) -> list[dict[str, str]]:
    """{node id: fault name} per subprocess, no node id twice in one (a test runs with one fault at a time)."""
    plans: list[dict[str, str]] = []
    for fault in table:
        for node in catchers(fault):
            plan = next((p for p in plans if node not in p), None)
            if plan is None:
                plans.append(plan := {})
            plan[node] = fault.name
    return plans


def run_plan(plan: dict[str, str], folder: Path) -> dict[str, tuple[str, str]]:
    """Run the plan's tests with their faults; {node id: ("failed" | "passed" | "skipped" | "not run", why)}."""
    folder.mkdir(parents=True)
    (folder / "plan.json").write_text(json.dumps(plan))
    report = folder / "report.jsonl"
    env = {**os.environ, "LATENTMAS_FAULT_PLAN": str(folder / "plan.json"), "LATENTMAS_FAULT_REPORT": str(report),
           "LATENTMAS_FAULT_NOW": str(folder / "fault_now"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(FAULT_SITE), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow",
                           "--rootdir", str(ROOT), "--basetemp", str(folder / "tmp"), *plan],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    (folder / "pytest.log").write_text(proc.stdout + proc.stderr)
    outcomes: dict[str, tuple[str, str]] = {node: ("not run", "") for node in plan}
    for line in report.read_text().splitlines() if report.exists() else []:
        r = json.loads(line)
        if r["nodeid"] not in plan:
            continue
        state, _ = outcomes[r["nodeid"]]
        if r["outcome"] == "failed":  # a failed call, or an error in setup or teardown (the output guard)
            outcomes[r["nodeid"]] = ("failed", f"{r['when']}: {r['why']}")
        elif r["outcome"] == "skipped":
            outcomes[r["nodeid"]] = ("skipped", r["why"])
        elif r["when"] == "call" and state == "not run":
            outcomes[r["nodeid"]] = ("passed", "")
    return outcomes


def table_lines(results: list[tuple[faults.Fault, str, str, str]]) -> list[str]:
    lines = ["| Fault | Catching test | Failed | Why |", "|---|---|---|---|"]
    for fault, node, state, why in results:
        cell = lambda text: text.replace("|", "\\|")
        lines.append(f"| {cell(fault.name)} | `{cell(node)}` | {'yes' if state == 'failed' else 'NO (' + state + ')'} "
                     f"| {cell(why)[:120]} |")
    return lines


@pytest.mark.skipif("LATENTMAS_FAULT_PLAN" in os.environ, reason="inside a fault-injection run")
@pytest.mark.unguarded_outputs("its tmp_path holds the outputs of runs with faults in them, on purpose")
def test_every_fault_is_caught(tmp_path):
    outcomes: dict[tuple[str, str], tuple[str, str]] = {}
    for k, plan in enumerate(rounds(faults.FAULTS)):
        for node, result in run_plan(plan, tmp_path / f"round{k}").items():
            outcomes[(plan[node], node)] = result
    results = [(fault, node, *outcomes[(fault.name, node)]) for fault in faults.FAULTS for node in catchers(fault)]
    if not VLLM:  # said in the table, not counted: these catchers need stock vLLM (bash scripts/install.sh --vllm)
        results += [(fault, node, "not run: vLLM not installed", "") for fault in faults.FAULTS
                    for node in fault.vllm_catchers]
    faults.TABLE[:] = table_lines(results)
    (tmp_path / "fault_table.md").write_text("\n".join(faults.TABLE) + "\n")
    uncaught = [f"{fault.name}: {node} {state}" for fault, node, state, _ in results
                if state not in ("failed", "not run: vLLM not installed")]
    assert not uncaught, "faults not caught (logs under " + str(tmp_path) + "):\n" + "\n".join(uncaught)


def test_the_table_is_well_formed():
    names = [fault.name for fault in faults.FAULTS]
    assert len(set(names)) == len(names) and all(fault.catchers for fault in faults.FAULTS)
    for fault in faults.FAULTS:
        for node in catchers(fault, vllm=True):
            path, _, test = node.partition("::")
            assert (ROOT / path).is_file() and re.match(r"test_\w+", test), node
            assert re.search(rf"^def {re.escape(test.split('[')[0])}\(", (ROOT / path).read_text(), re.M), node
    assert rounds([faults.Fault("a", None, ("x", "y")), faults.Fault("b", None, ("x",))]) == [{"x": "a", "y": "a"},
                                                                                            {"x": "b"}]


def test_readme_lists_every_fault_and_its_catching_tests():
    section = (ROOT / "README.md").read_text().split("## Tests", 1)[1]
    for fault in faults.FAULTS:
        row = next((l for l in section.splitlines() if l.startswith(f"| {fault.name} |")), None)
        assert row is not None, f"README Tests table: no row for {fault.name!r}"
        for node in catchers(fault, vllm=True):
            assert node.split("::")[1].split("[")[0] in row, (fault.name, node)
