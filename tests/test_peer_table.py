"""The peer table (tests/peers.py): the project's verdicts beside math-verify's and EvalPlus's on one corpus.
The project must be right wherever an entry names no known limitation; every disagreement is printed at the end
of the session with the side judged right."""

import pytest

import code_check
import peers
from data import load_task, score_output


def _rows(cases, task, item_of, peer):
    rows = []
    for case in cases:
        project = score_output(task, case.output, item_of(case), case.prompt, case.cut).correct
        rows.append((case.name, project, peer(case), case.right, case.known))
    return rows


def _check(kind, cases, rows):
    peers.tally(kind, rows)
    wrong = [name for case, (name, project, _, right, _) in zip(cases, rows) if (project == right) == bool(case.known)]
    assert not wrong, f"{kind}: the project's verdict is wrong (or a known limitation was fixed): {wrong}"


def test_numbers_against_math_verify():
    rows = _rows(peers.NUMBER, "gsm8k", lambda c: {"gold": c.gold}, lambda c: peers.math_verify_number(c.output, c.gold))
    _check("number (math-verify 0.9.0)", peers.NUMBER, rows)


def test_choices_against_math_verify():
    rows = _rows(peers.CHOICE, "medqa", lambda c: {"gold": c.gold, "choices": peers.OPTIONS},
                 lambda c: peers.math_verify_choice(c.output, c.gold))
    _check("choice (math-verify letter extraction)", peers.CHOICE, rows)


def test_code_against_evalplus(data_dir):
    if peers.import_evalplus() is None:
        pytest.skip(f"EvalPlus's checker is not installed (bash scripts/install.sh --test puts it in {peers.PEERS_DIR})")
    items = {it["id"]: it for task in ("mbppplus", "humanevalplus") for it in load_task(task, data_dir=str(data_dir),
                                                                                          max_samples=3)}
    rows = []
    for item_id, name, program, right in peers.CODE:
        item = items[item_id]
        program = program or item["solution"]
        task = {"Mbpp": "mbppplus", "HumanEval": "humanevalplus"}[item_id.split("/")[0]]
        project = score_output(task, f"```python\n{program}\n```", item)
        times = code_check.reference_times(item["solution"], item["gold"], code_check.parse_harness(item["gold"]))
        note = f"checked {project.tests_checked}/{project.tests_total}"
        rows.append((f"{item_id} {name}", project.correct, peers.evalplus_verdict(item, program, times), right, note))
    peers.tally("code (EvalPlus 0.3.1 untrusted_check)", rows)
    wrong = [name for name, project, _, right, _ in rows if project != right]
    assert not wrong, f"code: the project's verdict is wrong: {wrong}"
