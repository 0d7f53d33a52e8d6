"""Answer extraction and scoring on answers shaped as models really write them (table-driven), the extraction rule
recorded with every prediction, and the failure reason of code that does not pass."""

import json
import re

import pytest

import utils
from utils import (
    extract_choice,
    extract_gold,
    extract_gsm8k_answer,
    extract_markdown_python_block,
    normalize_answer,
)
from data import score_output, score_prediction, score_predictions

# (model output, gold, expected prediction, expected correct) for the "number" kind (GSM8K).
NUMBER = [
    (r"So the total is \boxed{18}.", "18", "18", True),
    (r"\boxed{18.0}", "18", "18", True),  # reference defect: "18.0" != "18"
    (r"\boxed{18.00}", "18", "18", True),
    (r"\boxed{1,000}", "1000", "1000", True),  # reference defect: read as "1"
    (r"\boxed{1,450,000}", "1450000", "1450000", True),
    (r"\boxed{\frac{1}{2}}", "0.5", "0.5", True),  # reference defect: read as "1"
    (r"\boxed{\dfrac{3}{4}}", "0.75", "0.75", True),
    (r"\boxed{1/2}", "0.5", "0.5", True),
    (r"\boxed{2\frac{1}{2}}", "2.5", "2.5", True),
    (r"\boxed{-\frac{1}{2}}", "-0.5", "-0.5", True),
    (r"\boxed{12/4}", "3", "3", True),
    (r"\boxed{2 1/2 \text{ cups}}", "2.5", "2.5", True),
    (r"\boxed{\$18}", "18", "18", True),
    (r"$\boxed{18}$ dollars", "18", "18", True),
    (r"\[\boxed{\$1{,}250.00}\]", "1250", "1250", True),
    (r"\boxed{50\%}", "50", "50", True),
    (r"\boxed{5 \text{ dollars}}", "5", "5", True),
    (r"\boxed{\text{5 apples}}", "5", "5", True),
    (r"\boxed{12 \text{ hours}}", "12", "12", True),
    (r"\boxed{-3}", "-3", "-3", True),
    ("\\boxed{\u22125}", "-5", "-5", True),  # unicode minus
    (r"\boxed{1\,000}", "1000", "1000", True),
    (r"\boxed{1{,}000}", "1000", "1000", True),
    (r"\boxed{x = 5}", "5", "5", True),
    (r"\boxed{30^\circ}", "30", "30", True),
    (r"\boxed{\textbf{42}}", "42", "42", True),
    (r"\boxed{.5}", "0.5", "0.5", True),
    (r"\boxed{\frac{\sqrt{4}}{2}}", "1", r"\frac{\sqrt{4}}{2}", True),  # math-verify decides
    (r"\boxed{1.5 \times 10^3}", "1500", r"1.5 \times 10^3", True),
    (r"First \boxed{3}, then corrected: \boxed{4}", "4", "4", True),  # the last box counts
    (r"<think>maybe \boxed{3}</think> So the answer is \boxed{4}", "4", "4", True),
    ("The answer is 42.", "42", "42", True),  # no box
    ("Each costs $3, so 4 cost $12. The answer is $12.", "12", "12", True),
    (r"The answer is \(\frac{1}{2}\).", "0.5", "0.5", True),
    ("**Answer:** 12 cookies", "12", "12", True),
    ("Final Answer: $1,234.50", "1234.5", "1234.5", True),
    ("#### 2,125", "2125", "2125", True),
    ("So she has 7 apples left.", "7", "7", True),  # last-number fallback
    (r"\boxed{17}", "18", "17", False),
    (r"\boxed{3.14159}", "3.14", "3.14159", False),
    (r"\boxed{}", "18", "", False),
    ("I cannot solve this.", "18", None, False),
    ("", "18", None, False),
]

# "integer" kind (AIME).
INTEGER = [
    (r"\boxed{070}", "70", "70", True),
    (r"\boxed{70.0}", "70", "70", True),
    (r"\boxed{\frac{140}{2}}", "70", "70", True),
    (r"\boxed{2^{5}}", "32", "2^{5}", True),
    ("The final answer is 204", "204", "204", True),
    (r"\boxed{70.5}", "70", "70.5", False),
    (r"\boxed{71}", "70", "71", False),
]

OPTIONS = {"A": "Hemolytic uremic syndrome", "B": "Oral ulcers", "C": "Colorectal cancer", "D": "Pancreatic cancer"}
# "choice" kind: (model output, expected letter); the gold is C.
CHOICE = [
    (r"\boxed{C}", "C"),
    (r"\boxed{c}", "C"),
    (r"\boxed{(C)}", "C"),
    (r"\boxed{\text{C}}", "C"),
    (r"$\boxed{\text{C}}$", "C"),
    (r"\boxed{\textbf{(C)}}", "C"),
    (r"\boxed{C. Colorectal cancer}", "C"),
    (r"\boxed{Colorectal cancer}", "C"),  # the option's text
    ("**Final Answer**\n\\[\n\\boxed{C}\n\\]", "C"),
    ("The answer is (C).", "C"),  # reference defect: unboxed choices were lost
    ("The answer is C", "C"),
    ("The answer is: **(c)**", "C"),
    ("**Answer:** C", "C"),
    ("Answer: C", "C"),
    ("ANSWER: C", "C"),
    ("The answer is a bit tricky. Answer: Option C", "C"),
    ("The correct option is C.", "C"),
    ("the correct choice is (c)", "C"),
    ("Option C is correct.", "C"),
    ("Final answer: C) Colorectal cancer", "C"),
    ("A is wrong. B is wrong. The answer is (C).", "C"),
    ("The answer is A. Wait, actually the answer is C.", "C"),
    ("Reasoning about each option...\n\n**C**", "C"),
    ("...so the best fit is\n\nC", "C"),
    ("Therefore:\nC. Colorectal cancer", "C"),
    ("The answer is B", "B"),
    (r"\boxed{E}", None),  # not an option
    ("I am not sure.", None),
]

CODE_OK = "def add(a, b):\n    return a + b"
CODE_ITEM = {"gold": "assert add(1, 2) == 3\nassert add(-1, 1) == 0", "entry_point": "add"}
# (model output, expected extracted code or None)
CODE_BLOCKS = [
    (f"Here you go:\n```python\n{CODE_OK}\n```", CODE_OK),
    (f"```Python\n{CODE_OK}\n```", CODE_OK),
    (f"```py\n{CODE_OK}\n```", CODE_OK),
    (f"```\n{CODE_OK}\n```", CODE_OK),  # no language tag
    (f"```python\ndef add(a, b):\n    pass\n```\nBetter:\n```python\n{CODE_OK}\n```", CODE_OK),  # the last block
    (f"```python\n{CODE_OK}\n```\nTests:\n```python\nassert add(1, 2) == 3\n```", CODE_OK),  # defines entry point
    (f"<think>...</think>\n```python\n{CODE_OK}\n", CODE_OK),  # cut off by the token budget
    ("def add(a, b): return a + b", None),  # no fence at all
]


@pytest.mark.parametrize("text,gold,pred,correct", NUMBER)
def test_number(text, gold, pred, correct):
    assert score_prediction("gsm8k", text, {"gold": gold}) == (pred, correct)


@pytest.mark.parametrize("text,gold,pred,correct", INTEGER)
def test_integer(text, gold, pred, correct):
    assert score_prediction("aime2024", text, {"gold": gold}) == (pred, correct)


@pytest.mark.parametrize("text,letter", CHOICE)
def test_choice(text, letter):
    item = {"gold": "C", "choices": OPTIONS}
    assert score_prediction("medqa", text, item) == (letter, letter == "C")


@pytest.mark.parametrize("text,code", CODE_BLOCKS)
def test_code_extraction(text, code):
    assert extract_markdown_python_block(text, entry_point="add") == code


def test_shape_count():
    assert len(NUMBER) + len(INTEGER) + len(CHOICE) + len(CODE_BLOCKS) >= 40


def test_choice_without_options_uses_task_letters():
    assert score_prediction("arc_easy", r"\boxed{E}", {"gold": "E"}) == ("E", True)
    assert score_prediction("winogrande", r"\boxed{C}", {"gold": "A"}) == (None, False)
    assert extract_choice("The answer is (b)", "AB") == "B"


def test_reference_helpers():
    assert extract_gold("so 2,125 total\n#### 2,125") == "2125"
    assert extract_gold("#### -3") == "-3"
    assert extract_gold("no marker") is None
    assert extract_gsm8k_answer(r"\boxed{1,000}") == "1000"
    assert normalize_answer(" 18.0 ") == "18" and normalize_answer(" B ") == "b" and normalize_answer(None) is None


def test_code_scoring():
    ok = f"```python\n{CODE_OK}\n```"
    wrong = "```python\ndef add(a, b):\n    return a - b\n```"
    assert score_prediction("mbppplus", ok, CODE_ITEM) == (CODE_OK, True)
    assert score_prediction("mbppplus", wrong, CODE_ITEM)[1] is False
    assert score_prediction("humanevalplus", "no code here", CODE_ITEM) == (None, False)


def test_score_predictions_parallel_keeps_order():
    ok, wrong = f"```python\n{CODE_OK}\n```", "```python\ndef add(a, b):\n    return 0\n```"
    outputs = [ok, wrong, ok, wrong]
    results = score_predictions("mbppplus", outputs, [CODE_ITEM] * 4, workers=2)
    assert [c for _, c in results] == [True, False, True, False]
    results = score_predictions("gsm8k", [r"\boxed{1}", "2"], [{"gold": "1"}, {"gold": "1"}])
    assert results == [("1", True), ("2", False)]


def test_math_verify_off_main_thread():
    # math-verify's SIGALRM timeouts only work in the main thread; scoring must still work in workers.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(utils._math_verify_equal, "1", r"\frac{\sqrt{4}}{2}").result()


# ---- which extraction rule decided: each input below can be decided by its rule only (the weaker rules would
# ---- pick another answer, the stronger ones find nothing), so the answer and the rule prove the order.

NUMBER_RULES = [
    (r"\boxed{7}, since the answer is 8 and 9 remain", "7", "last_boxed"),
    ("The answer is 7, not 9", "7", "answer_phrase"),
    ("She had 3 apples, so 7", "7", "last_number"),
    ("I cannot tell.", None, "none"),
]
CHOICE_RULES = [
    (r"The answer is (B). On reflection: \boxed{C}", "C", "choice_boxed"),
    ("The answer is (C).\n\n**B**\n\nA", "C", "choice_phrase"),
    ("**B** looks tempting, but\nC", "C", "choice_last_line"),
    ("**B** looks tempting, but\nColorectal cancer", "C", "option_text"),
    ("I pick **C** here, given the findings.", "C", "choice_bold"),
    ("I am not sure.", None, "none"),
]
WRONG_CODE = "def add(a, b):\n    return a - b"
CODE_RULES = [
    (f"```python\n{CODE_OK}\n```\n```\n{WRONG_CODE}\n```", CODE_OK, "code_python_block"),
    (f"```python\n{CODE_OK}\n```\n```python\nassert add(1, 2) == 3\n```", CODE_OK, "code_block_defining_entry_point"),
    (f"```\n{WRONG_CODE}\n```\n```\n{CODE_OK}\n```", CODE_OK, "code_any_block"),
    (f"```python\n{CODE_OK}\n", CODE_OK, "code_unclosed_fence"),
    ("def add(a, b): return a + b", None, "none"),
]


@pytest.mark.parametrize("text,answer,rule", NUMBER_RULES)
def test_number_rule(text, answer, rule):
    assert utils.extract_number_with_rule(text) == utils.Extraction(answer, rule)
    assert score_output("gsm8k", text, {"gold": "7"}) == utils.Score(answer, answer == "7", rule)
    assert extract_gsm8k_answer(text) == answer  # the reference's helper is unchanged


@pytest.mark.parametrize("text,letter,rule", CHOICE_RULES)
def test_choice_rule(text, letter, rule):
    item = {"gold": "C", "choices": OPTIONS}
    assert score_output("medqa", text, item) == utils.Score(letter, letter == "C", rule)
    assert extract_choice(text, "ABCD", OPTIONS) == letter


@pytest.mark.parametrize("text,code,rule", CODE_RULES)
def test_code_rule(text, code, rule):
    assert utils.extract_code_with_rule(text, entry_point="add") == utils.Extraction(code, rule)
    assert extract_markdown_python_block(text, entry_point="add") == code


def test_every_rule_is_tested():
    rules = {r for table in (NUMBER_RULES, CHOICE_RULES, CODE_RULES) for *_, r in table}
    documented = set(re.findall(r"\b(?:none|[a-z]+_[a-z_]+)\b", utils.Extraction.__doc__.split("Rules,")[1]))
    assert rules == documented


FAILING_CODE = [  # (candidate, what its failure reason must say)
    (WRONG_CODE, "AssertionError at line 1 of the tests: assert add(1, 2) == 3"),
    ("def add(a, b):\n    raise ValueError('boom')", "ValueError: boom at line 2 of the candidate"),
    ("def add(a, b)\n    return a + b", "SyntaxError"),
    ("def add(a, b):\n    while True:\n        pass", "TimeoutError"),
]


@pytest.mark.parametrize("code,reason", FAILING_CODE)
def test_code_failure_reason(code, reason):
    item = {**CODE_ITEM, "timeout": 2}
    score = score_output("mbppplus", f"```python\n{code}\n```", item)
    assert score.correct is False and reason in score.failure and "\n" not in score.failure
    assert score_output("mbppplus", f"```python\n{CODE_OK}\n```", item).failure is None
    assert score_output("mbppplus", "no code", item).failure == "no code block in the output"


class ScriptedMethod:
    """Stands in for a Method in run_method: returns fixed final texts, no model."""

    name = "baseline"
    kv_peak = None

    def __init__(self, texts):
        self.texts = iter(texts)

    def reset_kv(self):
        pass

    def run_batch(self, batch, answer_kind):
        from methods import AgentTrace, ItemOutput

        return [ItemOutput(next(self.texts), [AgentTrace("judger", "judger", "prompt")]) for _ in batch]


def test_records_carry_rule_and_failure_and_summary_counts_rules(tmp_path, capsys):
    from methods.runner import run_method, summarize

    items = [{"id": "Mbpp/1", "question": "add", **CODE_ITEM} for _ in range(3)]
    texts = [f"```python\n{CODE_OK}\n```", f"```python\n{WRONG_CODE}\n```", f"```\n{CODE_OK}\n```"]
    records = run_method(ScriptedMethod(texts), "mbppplus", "code", items, set(), tmp_path / "p.jsonl", 3)
    assert [r["extraction_rule"] for r in records] == ["code_python_block", "code_python_block", "code_any_block"]
    assert records[0]["failure"] is None
    assert records[1]["failure"] == "AssertionError at line 1 of the tests: assert add(1, 2) == 3"
    assert json.loads((tmp_path / "p.jsonl").read_text().splitlines()[1])["failure"] == records[1]["failure"]
    assert summarize(records)["extraction_rules"] == {"code_python_block": {"n": 2, "correct": 1},
                                                      "code_any_block": {"n": 1, "correct": 1}}
    trace = capsys.readouterr().out
    assert "Gold=tests of add() (2 cases)" in trace and "assert add(-1, 1)" not in trace
    assert "Failure: AssertionError at line 1 of the tests" in trace
