"""Answer extraction and scoring on answers shaped as models really write them (table-driven)."""

import pytest

import utils
from utils import (
    extract_choice,
    extract_gold,
    extract_gsm8k_answer,
    extract_markdown_python_block,
    normalize_answer,
    score_prediction,
    score_predictions,
)

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
