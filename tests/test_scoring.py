"""Answer extraction and scoring on answers shaped as models really write them (table-driven): what of an output is
read (thinking, outputs cut at the token budget), number shapes, choices by option text, code checked out of the
candidate's reach with EvalPlus's per-input limits, the records and summaries that carry it all, and
scripts/rescore.py."""

import json
import re
from pathlib import Path

import pytest

import code_check
import utils
from utils import (
    extract_choice,
    extract_gold,
    extract_gsm8k_answer,
    extract_markdown_python_block,
    normalize_answer,
)
from data import get_task, score_output

ROOT = Path(__file__).resolve().parents[1]

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

def verdict(score: utils.Score) -> tuple[str | None, bool]:
    return score.prediction, score.correct


def verdict_of(task: str, text: str, item: dict) -> tuple[str | None, bool]:
    """(prediction, correct) of one output, scored by the task."""
    return verdict(get_task(task).score(text, item))



@pytest.mark.parametrize("text,gold,pred,correct", NUMBER)
def test_number(text, gold, pred, correct):
    assert verdict_of("gsm8k", text, {"gold": gold}) == (pred, correct)


@pytest.mark.parametrize("text,gold,pred,correct", INTEGER)
def test_integer(text, gold, pred, correct):
    assert verdict_of("aime2024", text, {"gold": gold}) == (pred, correct)


@pytest.mark.parametrize("text,letter", CHOICE)
def test_choice(text, letter):
    item = {"gold": "C", "choices": OPTIONS}
    assert verdict_of("medqa", text, item) == (letter, letter == "C")


@pytest.mark.parametrize("text,code", CODE_BLOCKS)
def test_code_extraction(text, code):
    assert extract_markdown_python_block(text, entry_point="add") == code


def test_shape_count():
    assert len(NUMBER) + len(INTEGER) + len(CHOICE) + len(CODE_BLOCKS) >= 40


def test_choice_without_options_uses_task_letters():
    assert verdict_of("arc_easy", r"\boxed{E}", {"gold": "E"}) == ("E", True)
    assert verdict_of("winogrande", r"\boxed{C}", {"gold": "A"}) == (None, False)
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
    assert verdict_of("mbppplus", ok, CODE_ITEM) == (CODE_OK, True)
    assert verdict_of("mbppplus", wrong, CODE_ITEM)[1] is False
    assert verdict_of("humanevalplus", "no code here", CODE_ITEM) == (None, False)


def test_score_batch_in_parallel_keeps_order():
    ok, wrong = f"```python\n{CODE_OK}\n```", "```python\ndef add(a, b):\n    return 0\n```"
    outputs = [ok, wrong, ok, wrong]
    results = get_task("mbppplus").score_batch(outputs, [CODE_ITEM] * 4, workers=2)
    assert [s.correct for s in results] == [True, False, True, False]
    results = get_task("gsm8k").score_batch([r"\boxed{1}", "2"], [{"gold": "1"}, {"gold": "1"}])
    assert [verdict(s) for s in results] == [("1", True), ("2", False)]


def test_math_verify_off_main_thread():
    # math-verify's SIGALRM timeouts only work in the main thread; scoring must still work in workers.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(utils._math_verify_equal, "1", r"\frac{\sqrt{4}}{2}").result()


# ---- which extraction rule decided: each input below can be decided by its rule only (the weaker rules would
# ---- pick another answer, the stronger ones find nothing), so the answer and the rule prove the order.

# (output, cut at the budget, answer, rule)
NUMBER_RULES = [
    (r"\boxed{7}, since the answer is 8 and 9 remain", False, "7", "last_boxed"),
    ("The answer is 7, not 9", False, "7", "answer_phrase"),
    ("She had 3 apples, so 7", False, "7", "last_number"),
    ("She had 3 apples, so 7", True, None, "cut_before_answer"),
    (r"<think>The answer is \boxed{7}, so 7", False, None, "thinking_not_closed"),
    ("I cannot tell.", False, None, "none"),
]
CHOICE_RULES = [
    (r"The answer is (B). On reflection: \boxed{C}", False, "C", "choice_boxed"),
    ("The answer is (C).\n\n**B**\n\nA", False, "C", "choice_phrase"),
    ("The answer is (B)? No: the answer is Colorectal cancer.\n\n**B**", False, "C", "choice_phrase_text"),
    ("**B** looks tempting, but\nC", False, "C", "choice_last_line"),
    ("**B** looks tempting, but\nColorectal cancer", False, "C", "option_text"),
    ("I pick **C** here, given the findings.", False, "C", "choice_bold"),
    ("I pick **C** here, given the findings.", True, None, "cut_before_answer"),
    ("<think>The answer is (C).", False, None, "thinking_not_closed"),
    ("I am not sure.", False, None, "none"),
]
WRONG_CODE = "def add(a, b):\n    return a - b"
CODE_RULES = [
    (f"```python\n{CODE_OK}\n```\n```\n{WRONG_CODE}\n```", CODE_OK, "code_python_block"),
    (f"```python\n{CODE_OK}\n```\n```python\nassert add(1, 2) == 3\n```", CODE_OK, "code_block_defining_entry_point"),
    (f"```\n{WRONG_CODE}\n```\n```\n{CODE_OK}\n```", CODE_OK, "code_any_block"),
    (f"```python\n{CODE_OK}\n", CODE_OK, "code_unclosed_fence"),
    ("def add(a, b): return a + b", None, "none"),
    (f"<think>\n```python\n{CODE_OK}\n```\nHmm, and", None, "thinking_not_closed"),
]


@pytest.mark.parametrize("text,cut,answer,rule", NUMBER_RULES)
def test_number_rule(text, cut, answer, rule):
    assert utils.extract_number_with_rule(utils.read_output(text, cut_at_budget=cut)) == utils.Extraction(answer, rule)
    assert score_output("gsm8k", text, {"gold": "7"}, cut_at_budget=cut) == utils.Score(answer, answer == "7", rule)


@pytest.mark.parametrize("text,cut,letter,rule", CHOICE_RULES)
def test_choice_rule(text, cut, letter, rule):
    item = {"gold": "C", "choices": OPTIONS}
    assert score_output("medqa", text, item, cut_at_budget=cut) == utils.Score(letter, letter == "C", rule)


def test_reference_helpers_read_text_as_an_output_that_ended():
    """extract_gsm8k_answer / extract_choice on plain text: thinking stripped, fallbacks allowed (no budget cut)."""
    assert extract_gsm8k_answer("She had 3 apples, so 7") == "7"
    assert extract_gsm8k_answer(r"<think>\boxed{7}") is None
    assert extract_gsm8k_answer(r"<think>\boxed{7}</think>The answer is 8") == "8"
    assert extract_choice("I pick **C** here.", "ABCD", OPTIONS) == "C"


@pytest.mark.parametrize("text,code,rule", CODE_RULES)
def test_code_rule(text, code, rule):
    assert utils.extract_code_with_rule(utils.read_output(text), entry_point="add") == utils.Extraction(code, rule)


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
    """Stands in for a Method in run_method: returns fixed final texts (or (text, cut at the budget) pairs), no
    model."""

    name = "baseline"
    kv_peak = None

    def __init__(self, texts):
        self.texts = iter(texts)

    def reset_kv(self):
        pass

    def run_batch(self, batch, answer_kind):
        from methods import AgentTrace, ItemOutput

        outputs = []
        for _ in batch:
            text = next(self.texts)
            text, cut = text if isinstance(text, tuple) else (text, False)
            outputs.append(ItemOutput(text, [AgentTrace("judger", "judger", "prompt", text, cut_at_budget=cut)]))
        return outputs


def test_records_carry_rule_and_failure_and_summary_counts_rules(tmp_path, capsys):
    from methods.runner import run_method, summarize

    items = [{"id": "Mbpp/1", "question": "add", **CODE_ITEM} for _ in range(3)]
    texts = [f"```python\n{CODE_OK}\n```", f"```python\n{WRONG_CODE}\n```", f"```\n{CODE_OK}\n```"]
    records = run_method(ScriptedMethod(texts), get_task("mbppplus"), items, set(), tmp_path / "p.jsonl", 3)
    assert [r["extraction_rule"] for r in records] == ["code_python_block", "code_python_block", "code_any_block"]
    assert records[0]["failure"] is None
    assert records[1]["failure"] == "AssertionError at line 1 of the tests: assert add(1, 2) == 3"
    assert json.loads((tmp_path / "p.jsonl").read_text().splitlines()[1])["failure"] == records[1]["failure"]
    assert summarize(records)["extraction_rules"] == {"code_python_block": {"n": 2, "correct": 1},
                                                      "code_any_block": {"n": 1, "correct": 1}}
    trace = capsys.readouterr().out
    assert "Gold=tests of add() (2 cases)" in trace and "assert add(-1, 1)" not in trace
    assert "Failure: AssertionError at line 1 of the tests" in trace


# ---- what of an output is read. Each row: (task, output, gold, prompt, cut at the budget, committed prediction,
# ---- the prediction of the reference's whole-text rule (--score_whole_text)); the verdicts differ on every row.
QWEN3_THINKING_PROMPT = "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<think>\n"  # --think, R1-style templates
MC = {"gold": "B", "choices": OPTIONS}
READING = {
    # Thinking: a box or an answer phrase inside the thinking never beats the final answer written after it.
    "box inside the thinking": ("gsm8k", "<think>Try \\boxed{3}. Hmm, recheck.</think>\nThe answer is 4.", "4", "",
                                False, "4", "3"),
    "phrase inside the thinking": ("gsm8k", "<think>The answer is 5? No.</think>\n\n6 apples in all.", "6", "",
                                   False, "6", "5"),
    "choice inside the thinking": ("medqa", "<think>the answer is (C)... no, B fits</think>\n**B**", MC, "", False,
                                   "B", "C"),
    # Thinking that never closed (cut at the budget inside it) has no answer, whatever it mentioned.
    "thinking never closed": ("gsm8k", "<think>Half of 36 is 18, so 18", "18", "", True, None, "18"),
    "thinking ended without closing": ("gsm8k", "<think>Half of 36 is 18.", "18", "", False, None, "18"),
    "thinking opened by the prompt": ("gsm8k", "Half of 36 is 18, so \\boxed{18}", "18", QWEN3_THINKING_PROMPT,
                                      True, None, "18"),
    "choice thinking never closed": ("medqa", "<think>Option B. Oral ulcers? The answer is (B)", MC, "", True, None,
                                     "B"),
    # An output cut at the budget is credited only for an answer it committed to, never for where it stopped.
    "cut mid-sentence": ("gsm8k", "She buys 2 + 3 = 5 more, and then", "5", "", True, None, "5"),
    "cut inside an option list": ("medqa", "Reviewing the options:\nA. Hemolytic uremic syndrome\nB", MC, "", True,
                                  None, "B"),
    "cut after a bold letter": ("medqa", "Consider **B** first, then", MC, "", True, None, "B"),
}


@pytest.mark.parametrize("task,text,gold,prompt,cut,committed,whole", READING.values(), ids=list(READING))
def test_what_is_read(task, text, gold, prompt, cut, committed, whole):
    item = gold if isinstance(gold, dict) else {"gold": gold}
    assert score_output(task, text, item, prompt, cut).prediction == committed
    assert score_output(task, text, item, prompt, cut, whole_text=True).prediction == whole


def test_budget_cut_output_keeps_a_commitment():
    text = "So the total is \\boxed{5}. Let me double check: 2 + 3 = 5, and"
    assert score_output("gsm8k", text, {"gold": "5"}, cut_at_budget=True) == utils.Score("5", True, "last_boxed")
    text = "The answer is (B) Oral ulcers. To be sure, A. Hemolytic"
    assert score_output("medqa", text, MC, cut_at_budget=True) == utils.Score("B", True, "choice_phrase")


def test_read_output_splits_thinking_from_the_answer():
    r = utils.read_output("<think>a\nb</think>\n\nThe answer is 4.")
    assert (r.thinking, r.answer_text) == ("<think>a\nb", "\n\nThe answer is 4.")
    assert utils.read_output("no thinking here") == utils.Reading("no thinking here")
    r = utils.read_output("x</think>y", prompt="...assistant\n<think>\n")
    assert (r.thinking, r.answer_text) == ("x", "y")
    assert utils.read_output("thinking, cut", prompt=QWEN3_THINKING_PROMPT).answer_text is None
    # Qwen3's non-thinking mode: an empty, closed think block in the prompt opens nothing.
    assert utils.read_output("7", prompt="assistant\n<think>\n\n</think>\n\n") == utils.Reading("7")
    assert utils.read_output("<think>a</think>b<think>c").answer_text is None  # opened again after the last close


def test_qwen3_think_markers_survive_decoding(qwen3_tokenizer):
    """The real Qwen3 tokenizer keeps <think> / </think> when decoding with skip_special_tokens (as every engine
    decodes), and its non-thinking prompt closes the think block it opens."""
    ids = qwen3_tokenizer("<think>\n2 + 3 is 5\n</think>\n\nThe answer is 5")["input_ids"]
    text = qwen3_tokenizer.decode(ids, skip_special_tokens=True)
    assert utils.read_output(text) == utils.Reading("\n\nThe answer is 5", "<think>\n2 + 3 is 5\n")
    messages = [{"role": "user", "content": "2 + 3?"}]
    off = qwen3_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                              enable_thinking=False)
    assert utils.read_output("The answer is 5", prompt=off).thinking is None


# ---- number shapes (each read wrongly before: sign lost, number cut at the separator, first number of the
# ---- expression instead of its value)
NUMBER_SHAPES = [
    ("The answer is \u22125", "-5"),
    ("\\boxed{\u22123.5}", "-3.5"),
    ("The answer is 70 000.", "70000"),
    ("The answer is 70\\,000 dollars.", "70000"),
    ("Answer: 1{,}250", "1250"),
    ("So she pays 70\u202f000 in total", "70000"),  # narrow no-break space, last-number fallback
    ("So she pays 70\u00a0000 in total", "70000"),
    ("The answer is 3 × 4 = 12.", "12"),
    ("The answer is $18 + $2 = $20.", "20"),
    ("The final answer is 2 \\times 6 = 12 dollars", "12"),
    ("The answer is: 5 + 7 = 12 apples", "12"),
    ("The answer is 12, because 3 x 4 = 12 and 5 more.", "12"),
    ("The answer is \\frac{3}{4} = 0.75", "0.75"),
    ("The answer is 3/4 of the pie.", "0.75"),
    ("The numbers are 5 100 200", "200"),  # plain spaces join groups only in a committed answer
]


@pytest.mark.parametrize("text,value", NUMBER_SHAPES)
def test_number_shapes(text, value):
    assert score_output("gsm8k", text, {"gold": value}).prediction == value


# ---- choices: option text after an answer phrase, the article "A"
ARTICLE_OPTIONS = {"A": "Hemolytic uremic syndrome", "B": "A decrease in serum calcium", "C": "Colorectal cancer"}
CHOICE_TEXT = [
    ("The answer is Colorectal cancer.", "C"),
    ("**Answer:** Colorectal cancer", "C"),
    ("The correct answer is: a decrease in serum calcium", "B"),
    ("The answer is A decrease in serum calcium.", "B"),  # the article is no letter
    ("The answer is A decrease in calcium levels.", None),  # the article, and no option's text: nothing
    ("The answer is A because of the hemolysis.", "A"),
    ("The answer is A. Hemolytic uremic syndrome", "A"),
    ("The answer is (A) because of it.", "A"),
]


@pytest.mark.parametrize("text,letter", CHOICE_TEXT)
def test_choice_option_text_and_article(text, letter):
    item = {"gold": "B", "choices": ARTICLE_OPTIONS}
    assert score_output("medqa", text, item).prediction == letter


# ---- code: the harness out of the candidate's reach. An EvalPlus-style item (inputs, results, a comparison
# ---- helper and a loop), and programs that return wrong values and then try to switch the checks off.
HARNESS = """import numpy as np

def assertion(out, exp, atol):
    exact_match = out == exp
    if atol == 0 and isinstance(exp, float):
        atol = 1e-6
    if not exact_match and atol != 0:
        assert np.allclose(out, exp, rtol=1e-07, atol=atol)
    else:
        assert exact_match


inputs = [[1, 2], [-1, 1], [2.5, 0.25]]
results = [3, 0, 2.75]
for i, (inp, exp) in enumerate(zip(inputs, results)):
    assertion(add(*inp), exp, 0)
"""
HARNESS_ITEM = {"id": "toy/add", "gold": HARNESS, "entry_point": "add", "solution": CODE_OK}
WRONG = "def add(a, b):\n    return a - b\n"
SWITCH_OFF = {  # every one of these passed when candidate and tests shared one interpreter
    "builtin zip rebound": "import builtins, numpy\nbuiltins.zip = lambda *a: iter(())\n" + WRONG,
    "builtin enumerate rebound": "import builtins, numpy\nbuiltins.enumerate = lambda *a: iter(())\n" + WRONG,
    "builtin isinstance rebound": "import builtins, numpy\nnumpy.allclose = lambda *a, **k: True\n"
                                  "builtins.isinstance = lambda *a: True\n" + WRONG,
    "comparison helper rebound": "import sys\ndef add(a, b):\n"
                                 "    sys._getframe(1).f_globals['assertion'] = lambda *a: None\n"
                                 "    return a + b if (a, b) == (1, 2) else a - b\n",
    "numpy.allclose patched": "import numpy\nnumpy.allclose = lambda *a, **k: True\n"
                              "def add(a, b):\n    return a + b + (0.5 if isinstance(a, float) else 0)\n",
    "expected outputs rewritten": "import gc\ndef add(a, b):\n    for o in gc.get_objects():\n"
                                  "        if isinstance(o, list) and o == [3, 0, 2.75]:\n            o[:] = [3, -2, 2.25]\n"
                                  "    return a + b if (a, b) == (1, 2) else a - b\n",
    "value equal to everything": "class Same(int):\n    def __eq__(self, other):\n        return True\n"
                                 "    __hash__ = int.__hash__\ndef add(a, b):\n    return Same(0)\n",
    "exit after the first input": "import os\ncalls = []\ndef add(a, b):\n    calls.append(1)\n"
                                  "    if len(calls) > 1:\n        os._exit(0)\n    return a + b\n",
}


@pytest.mark.parametrize("name", list(SWITCH_OFF))
def test_the_harness_is_out_of_the_candidates_reach(name):
    score = score_output("mbppplus", f"```python\n{SWITCH_OFF[name]}\n```", HARNESS_ITEM)
    assert score.correct is False and score.tests_checked < score.tests_total == 3, score


def test_code_checked_inputs_are_counted():
    ok = score_output("mbppplus", f"```python\n{CODE_OK}\n```", HARNESS_ITEM)
    assert (ok.correct, ok.tests_checked, ok.tests_total, ok.failure) == (True, 3, 3, None)
    wrong_third = "def add(a, b):\n    return a + b if isinstance(a, int) else 0.0"
    score = score_output("mbppplus", f"```python\n{wrong_third}\n```", HARNESS_ITEM)
    assert (score.correct, score.tests_checked, score.tests_total) == (False, 2, 3)
    assert score.failure.startswith("wrong output on input 3 of 3: add(2.5, 0.25) returned 0.0")
    raises = score_output("mbppplus", "```python\ndef add(a, b):\n    raise ValueError('boom')\n```", HARNESS_ITEM)
    assert raises.failure == "ValueError: boom at line 2 of the candidate: raise ValueError('boom') (input 1 of 3)"
    plain = score_output("mbppplus", f"```python\n{CODE_OK}\n```", CODE_ITEM)  # plain asserts: one program
    assert (plain.correct, plain.tests_checked, plain.tests_total) == (True, None, None)


def test_per_input_time_limits_follow_the_reference_solution():
    """EvalPlus's limits: max(1 s, 4 x the reference's time) per input. The reference takes 0.4 s on input 2, so
    a candidate may take 1.3 s there (limit 1.6 s) but not on input 1 (limit 1 s); a candidate slow on every input
    but within each limit passes, however long the whole run."""
    slow = lambda where, seconds: ("import time\ndef add(a, b):\n"
                                   f"    if [a, b] {where}:\n        time.sleep({seconds})\n    return a + b\n")
    item = {**HARNESS_ITEM, "id": "toy/slow", "solution": slow("== [-1, 1]", 0.4)}
    limits, whole = code_check.input_limits(item, code_check.parse_harness(HARNESS))
    assert limits[0] == limits[2] == 1.0 and 1.6 <= limits[1] < 2.4 and whole == sum(limits) + 10
    assert score_output("mbppplus", f"```python\n{slow('== [-1, 1]', 1.3)}\n```", item).correct
    late = score_output("mbppplus", f"```python\n{slow('== [1, 2]', 1.3)}\n```", item)
    assert not late.correct and late.failure == "TimeoutError: input 1 of 3 ran over its time limit of 1.0 s"
    assert score_output("mbppplus", f"```python\n{slow('!= None', 0.7)}\n```", item).correct


def test_outputs_travel_as_plain_values():
    """What the candidate returns reaches the tests as the plain value it holds: subclasses as their base type,
    numpy as numpy, iterators as their items (a set comparison reads them), anything else equal to nothing."""
    set_harness = HARNESS.replace("exact_match = out == exp", "exact_match = set(out) == set(exp)").replace(
        "results = [3, 0, 2.75]", "results = [[1, 2], [-1, 1], [2.5, 0.25]]").replace("add(", "pair(")
    item = {"id": "toy/pair", "gold": set_harness, "entry_point": "pair"}
    programs = {
        "def pair(a, b):\n    return [b, a]": True,
        "def pair(a, b):\n    return (x for x in (a, b))": True,
        "import numpy as np\ndef pair(a, b):\n    return np.array([a, b])": True,
        "from collections import OrderedDict\ndef pair(a, b):\n    return OrderedDict([(a, 0), (b, 0)])": True,
        "class Box:\n    def __iter__(self):\n        return iter(())\ndef pair(a, b):\n    return Box()": False,
        "def pair(a, b):\n    return pair": False,
    }
    for program, passes in programs.items():
        assert score_output("mbppplus", f"```python\n{program}\n```", item).correct is passes, program


def test_records_carry_thinking_and_the_budget_cut_and_summary_counts_cuts(tmp_path, capsys):
    from methods.runner import run_method, summarize
    from report import comparison_table

    items = [{"id": f"q{i}", "question": "2 + 3?", "gold": "5"} for i in range(4)]
    texts = [("<think>maybe 4</think>\nThe answer is 5", False), ("So 2 + 3 = 5 and", True),
             ("<think>2 + 3 is 5, so", True), ("So 2 + 3 = 5", False)]
    records = run_method(ScriptedMethod(texts), get_task("gsm8k"), items, set(), tmp_path / "p.jsonl", 4)
    assert [(r["prediction"], r["extraction_rule"], r["cut_at_budget"]) for r in records] == [
        ("5", "answer_phrase", False), (None, "cut_before_answer", True), (None, "thinking_not_closed", True),
        ("5", "last_number", False)]
    assert (records[0]["thinking"], records[0]["answer_text"]) == ("<think>maybe 4", "\nThe answer is 5")
    assert (records[2]["thinking"], records[2]["answer_text"]) == ("<think>2 + 3 is 5, so", None)
    assert records[3]["thinking"] is None and records[3]["answer_text"] == "So 2 + 3 = 5"
    metrics = summarize(records)
    assert (metrics["correct"], metrics["cut_at_budget"], metrics["cut_at_budget_share"]) == (2, 2, 0.5)
    assert comparison_table({"baseline": metrics}).splitlines()[2].endswith("| 50.0 |")
    assert "cut at the token budget" in capsys.readouterr().out
    # --score_whole_text: the reference's rule credits both of the outputs cut at the budget.
    whole = run_method(ScriptedMethod(texts), get_task("gsm8k"), items, set(), tmp_path / "w.jsonl", 4,
                       whole_text=True)
    assert [r["correct"] for r in whole] == [True, True, True, True]


def test_code_records_count_checked_inputs(tmp_path):
    from methods.runner import run_method

    texts = [f"```python\n{CODE_OK}\n```", "```python\ndef add(a, b):\n    return a + b if a == 1 else 99\n```"]
    items = [{**HARNESS_ITEM, "question": "add"}] * 2
    records = run_method(ScriptedMethod(texts), get_task("mbppplus"), items, set(), tmp_path / "p.jsonl",
                         2, trace=False)
    assert [(r["tests_checked"], r["tests_total"]) for r in records] == [(3, 3), (1, 3)]


def test_score_whole_text_is_a_result_changing_flag():
    import report
    import run
    from flags import RESULT_KEYS

    assert "score_whole_text" in RESULT_KEYS and "score_whole_text" in report.COMPARABLE_KEYS
    for flags, whole in (([], False), (["--score_whole_text"], True)):
        settings = run.run_settings(run.parse_args(flags), get_task("gsm8k"))
        assert settings["score_whole_text"] is whole and settings["answer_rule"] == utils.ANSWER_RULES[whole]


def test_rescore_reports_and_writes_only_when_asked(tmp_path, capsys):
    """scripts/rescore.py on a run folder of an older run.py (no rules, no cut_at_budget recorded)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("rescore", ROOT / "scripts" / "rescore.py")
    rescore = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rescore)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    old = lambda i, text, tokens: {"method": "baseline", "index": i, "id": f"gsm8k/{i}", "question": "q", "gold": "5",
                                   "prediction": "5", "correct": True, "output_tokens": tokens, "final_text": text,
                                   "agents": [{"input": "prompt", "output": text, "output_tokens": tokens}]}
    records = [old(0, "So 2 + 3 = 5 and", 8), old(1, "So 2 + 3 = 5", 5)]  # the first used the whole budget
    (run_dir / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = {"settings": {"task": "gsm8k", "max_new_tokens": 8},
               "methods": {"baseline": {"n": 2, "correct": 2, "accuracy": 1.0, "seconds": 1.0}}}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    assert rescore.main([str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "baseline: 2/2 -> 1/2 correct; cut at the budget: 1/2" in out
    assert "item 0: '5' (correct, rule not recorded) -> None (wrong, cut_before_answer)" in out
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before  # nothing written without --write
    assert rescore.main([str(run_dir), "--write"]) == 0
    rewritten = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert [(r["correct"], r["extraction_rule"], r["cut_at_budget"]) for r in rewritten] == [
        (False, "cut_before_answer", True), (True, "last_number", False)]
    metrics = json.loads((run_dir / "summary.json").read_text())["methods"]["baseline"]
    assert (metrics["correct"], metrics["accuracy"], metrics["cut_at_budget_share"], metrics["seconds"]) == (
        1, 0.5, 0.5, 1.0)
    assert rescore.one_line_errors(lambda: rescore.main([str(tmp_path)]), "rescore.py") == 2
