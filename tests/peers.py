"""The peer table: a corpus of model outputs in the shapes real outputs take, each with the verdict a careful human
reader gives it, scored by the project and by the field's own tools (tests/test_peer_table.py):

- numbers: math-verify 0.9.0 (`parse` with its default extraction, then `verify` against the gold);
- choices: math-verify's letter extraction (StringExtractionConfig over the options' letters, plus its LaTeX
  extraction for boxed letters: lighteval's multiple-choice reading);
- code: EvalPlus 0.3.1's checker (`evalplus.eval.untrusted_check`) on the same test inputs and expected outputs,
  with the same per-input reference times.

Every entry counts as agree, project right, peer right or both wrong. Where the project is wrong the entry says
why (`known`): a limitation kept on purpose or not yet fixed. TABLE holds the lines the session prints at its end.
"""

from __future__ import annotations

import ast
import os
import sys
from dataclasses import dataclass
from pathlib import Path

TABLE: list[str] = []

OPTIONS = {"A": "Hemolytic uremic syndrome", "B": "A decrease in serum calcium", "C": "Colorectal cancer",
           "D": "Pancreatic cancer"}
THINKING_PROMPT = "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<think>\n"


@dataclass(frozen=True)
class Case:
    name: str
    output: str
    gold: str
    right: bool  # the verdict a careful reader gives
    cut: bool = False  # decoding stopped at the token budget
    prompt: str = ""
    known: str = ""  # why the project's verdict is wrong here (a limitation), "" where it must be right


NUMBER = [
    Case("box", "So the total is \\boxed{18}.", "18", True),
    Case("answer phrase", "The answer is 18.", "18", True),
    Case("gsm8k marker", "48 / 2 = 24\n#### 2,125", "2125", True),
    Case("thousands comma in a box", "\\boxed{1,000}", "1000", True),
    Case("fraction in a box", "$\\boxed{\\frac{1}{2}}$", "0.5", True),
    Case("trailing zeros", "\\boxed{18.00}", "18", True),
    Case("dollars", "The answer is \\$1,234.50", "1234.5", True),
    Case("space thousands", "Final Answer: 70 000", "70000", True),
    Case("LaTeX thin space thousands", "The answer is 70\\,000.", "70000", True),
    Case("narrow no-break space thousands", "She pays 70\u202f000 dollars in all.", "70000", True),
    Case("unicode minus", "The answer is \u22125.", "-5", True),
    Case("unicode minus in a box", "\\boxed{\u22123.5}", "-3.5", True),
    Case("expression then value", "The answer is 3 × 4 = 12.", "12", True),
    Case("sum of dollars", "The answer is $18 + $2 = $20.", "20", True),
    Case("LaTeX product then value", "The final answer is 2 \\times 6 = 12 dollars", "12", True),
    Case("box inside the thinking", "<think>Try \\boxed{3}. Hmm, recheck.</think>\nThe answer is 4.", "4", True),
    Case("corrected box", "First \\boxed{3}, then corrected: \\boxed{4}", "4", True),
    Case("thinking cut at the budget", "<think>Half of 36 is 18, so 18", "18", False, cut=True),
    Case("prompt-opened thinking cut", "Half of 36 is 18, so \\boxed{18}", "18", False, cut=True,
         prompt=THINKING_PROMPT),
    Case("prompt-opened thinking closed", "Half of 36 is 18.</think>\n\\boxed{18}", "18", True,
         prompt=THINKING_PROMPT),
    Case("cut mid-sentence", "She buys 2 + 3 = 5 more, and then", "5", False, cut=True),
    # Real outputs (example_logs, Qwen2.5-Coder-0.5B, cut at 256 tokens): no answer was ever stated.
    Case("real: cut before the answer", "Since he runs 540 meters in three sprints, the total weekly distance "
         "is:\n\\[ 540 \\text{ meters} \\]\n\nTherefore, the total number of", "540", False, cut=True),
    Case("real: cut inside an equation", "   \\[\n   \\text{Total sheep} = 160 + 80 + 20 = 260\n   \\]\n\n"
         "Thus, the total number of sheep is\n\\[\n260\n\\]\n\nNow", "260", False, cut=True),
    Case("real: box cut open", "= 100 \\text{ minutes} + 40 \\text{ minutes} = 140 \\text{ minutes}.\n\n"
         "Therefore, the load it takes to download the file is \\(\\boxed{140", "140", False, cut=True),
    Case("real: ended without a box", "Add the number of bolts of blue fiber and white fiber together: "
         "\\( 2 + 1 = 3 \\) bolts\n\nTherefore\n", "3", True),
    Case("last number of an ended output", "So she has 7 apples left.", "7", True),
    Case("box cut later", "So the total is \\boxed{5}. Let me double check: 2 + 3 = 5, and", "5", True, cut=True),
    Case("wrong box", "\\boxed{17}", "18", False),
    Case("no answer", "I cannot solve this.", "18", False),
    Case("equation in a box", "\\boxed{x = 5}", "5", True),
    Case("percent", "\\boxed{50\\%}", "50", True),
    Case("unit in a box", "\\boxed{5 \\text{ dollars}}", "5", True),
    Case("inline fraction", "The answer is \\(\\frac{1}{2}\\).", "0.5", True),
    Case("square root", "\\boxed{\\frac{\\sqrt{4}}{2}}", "1", True),
    Case("power", "\\boxed{2^{5}}", "32", True),
    Case("scientific", "The answer is $1.5 \\times 10^3$.", "1500", True),
    Case("ratio", "The answer is 3/4 of the pie.", "0.75", True),
    Case("bold answer", "**Answer:** 12 cookies", "12", True),
    Case("LaTeX comma group", "Therefore, she earns $\\$1{,}250$ per week.", "1250", True),
    Case("number words", "The answer is twelve.", "12", True, known="numbers written as words are not read"),
    Case("decimal comma", "The answer is 3,5", "3.5", True,
         known="a decimal comma is read as a list (3, 5): GSM8K answers use decimal points"),
]

CHOICE = [
    Case("box", "\\boxed{C}", "C", True),
    Case("boxed text", "$\\boxed{\\text{C}}$", "C", True),
    Case("answer phrase, parenthesis", "The answer is (C).", "C", True),
    Case("answer phrase", "The answer is C.", "C", True),
    Case("bold answer", "**Answer:** C", "C", True),
    Case("capitals", "ANSWER: C", "C", True),
    Case("correct option", "The correct option is C.", "C", True),
    Case("option is correct", "Option C is correct.", "C", True),
    Case("letter and text", "Final answer: C) Colorectal cancer", "C", True),
    Case("option text after the phrase", "The answer is Colorectal cancer.", "C", True),
    Case("option text starting with the article", "The answer is A decrease in serum calcium.", "B", True),
    Case("letter A with a reason", "The answer is A because of the hemolysis.", "A", True),
    Case("changed its mind", "The answer is A. Wait, actually the answer is C.", "C", True),
    Case("choice inside the thinking", "<think>The answer is (A)? No.</think>\nThe answer is (C).", "C", True),
    Case("thinking's choice is not the answer", "<think>So C.</think>\nThe answer is (B).", "C", False),
    Case("thinking cut at the budget", "<think>Looks like C. The answer is (C", "C", False, cut=True),
    Case("cut inside an option list", "Let me review:\nA. Hemolytic uremic syndrome\nB. Oral ulcers\nC", "C", False,
         cut=True),
    Case("bold letter in an ended output", "Reasoning about each option...\n\n**C**", "C", True),
    Case("last line letter", "...so the best fit is\n\nC", "C", True),
    Case("wrong letter", "The answer is B", "C", False),
    Case("no answer", "I am not sure.", "C", False),
    Case("lower-case letter", "the answer is c", "C", True,
         known="a lower-case letter after an answer phrase is read as a word ('the answer is a bit ...')"),
]

# Code: (item id, name, program, right). The programs return wrong values and try to pass anyway, or are correct
# in ways a strict checker must still accept.
CODE = [
    ("Mbpp/3", "reference solution", None, True),
    ("Mbpp/3", "wrong", "def is_not_prime(n):\n    return n % 2 == 0\n", False),
    ("Mbpp/3", "builtins rebound, wrong", "import builtins, numpy\nbuiltins.zip = lambda *a: iter(())\n"
     "builtins.enumerate = lambda *a: iter(())\ndef is_not_prime(n):\n    return True\n", False),
    ("Mbpp/3", "comparison helper rebound, wrong", "import sys\ndef is_not_prime(n):\n"
     "    sys._getframe(1).f_globals['assertion'] = lambda *a: None\n    return True\n", False),
    ("Mbpp/3", "value equal to everything", "class Same(int):\n    def __eq__(self, other):\n        return True\n"
     "    __hash__ = int.__hash__\ndef is_not_prime(n):\n    return Same(0)\n", False),
    ("Mbpp/3", "numpy.allclose patched, wrong", "import numpy\nnumpy.allclose = lambda *a, **k: True\n"
     "def is_not_prime(n):\n    return True\n", False),
    ("Mbpp/3", "exit while loading", "import sys\nsys.exit(0)\n", False),
    ("Mbpp/3", "os._exit at the first input", "import os\ndef is_not_prime(n):\n    os._exit(0)\n", False),
    ("Mbpp/3", "endless loop", "def is_not_prime(n):\n    while True:\n        pass\n", False),
    ("Mbpp/3", "slow on one input", "import time\ndef is_not_prime(n):\n    if n == 2:\n        time.sleep(1.6)\n"
     "    return n < 2 or any(n % d == 0 for d in range(2, int(n ** 0.5) + 1))\n", False),
    ("Mbpp/3", "numpy bool", "import numpy as np\ndef is_not_prime(n):\n"
     "    return np.bool_(n < 2 or any(n % d == 0 for d in range(2, int(n ** 0.5) + 1)))\n", True),
    ("Mbpp/3", "prints a lot", "def is_not_prime(n):\n    print('checking', n, '.' * 1000)\n"
     "    return n < 2 or any(n % d == 0 for d in range(2, int(n ** 0.5) + 1))\n", True),
    ("Mbpp/2", "reference solution", None, True),
    ("Mbpp/2", "generator of the common items", "def similar_elements(a, b):\n"
     "    return (x for x in set(a) if x in set(b))\n", True),
    ("Mbpp/2", "list instead of a tuple", "def similar_elements(a, b):\n    return sorted(set(a) & set(b))\n", True),
    ("Mbpp/2", "wrong", "def similar_elements(a, b):\n    return set(a) | set(b)\n", False),
    ("HumanEval/0", "reference solution", None, True),
    ("HumanEval/0", "off by one", "def has_close_elements(numbers, threshold):\n"
     "    return any(abs(a - b) <= threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n", False),
    ("HumanEval/0", "builtins rebound, wrong", "import builtins, numpy\nbuiltins.zip = lambda *a: iter(())\n"
     "def has_close_elements(numbers, threshold):\n    return False\n", False),
    ("HumanEval/0", "raises", "def has_close_elements(numbers, threshold):\n    raise ValueError('no')\n", False),
]


def math_verify_number(output: str, gold: str) -> bool:
    from math_verify import parse, verify

    parsed_gold, parsed = parse(f"${gold}$"), parse(output)
    return bool(parsed_gold and parsed and verify(parsed_gold, parsed))


def math_verify_choice(output: str, gold: str, letters: str = "ABCD") -> bool:
    from math_verify import LatexExtractionConfig, StringExtractionConfig, parse

    parsed = parse(output, extraction_config=[StringExtractionConfig(strings=tuple(letters)), LatexExtractionConfig()])
    return bool(parsed) and str(parsed[-1]).strip().upper() == gold


def harness_data(tests: str) -> tuple[list, list, float]:
    """(inputs, expected outputs, atol) of an EvalPlus-style harness, as EvalPlus's checker takes them."""
    tree = ast.parse(tests)
    lists = {t.id: n.value for n in ast.walk(tree) if isinstance(n, ast.Assign) for t in n.targets
             if isinstance(t, ast.Name) and t.id in ("inputs", "results")}
    setup = "\n".join(ast.get_source_segment(tests, n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)))
    scope: dict = {}
    exec(setup, scope)
    inputs, results = (eval(ast.get_source_segment(tests, lists[k]), scope) for k in ("inputs", "results"))
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                and n.func.id == "assertion")
    return inputs, results, float(ast.literal_eval(call.args[2]))


# Where scripts/install.sh --test puts EvalPlus (requirements-peer.txt), outside the environment.
PEERS_DIR = Path(os.environ.get("LATENTMAS_PEERS_DIR", Path.home() / ".cache" / "latentmas" / "peers"))


def import_evalplus():
    """evalplus.eval from the environment or PEERS_DIR; None when neither has it."""
    if PEERS_DIR.is_dir() and str(PEERS_DIR) not in sys.path:
        sys.path.append(str(PEERS_DIR))
    try:
        import evalplus.eval
    except ImportError:
        return None
    return evalplus.eval


def evalplus_verdict(item: dict, program: str, reference_times: list) -> bool:
    from evalplus.eval import PASS, untrusted_check

    inputs, expected, atol = harness_data(item["gold"])
    dataset = "mbpp" if item["id"].startswith("Mbpp/") else "humaneval"
    status, _ = untrusted_check(dataset, program, inputs, item["entry_point"], expected, atol,
                                [t or 0.0 for t in reference_times])
    return status == PASS


def tally(kind: str, rows: list[tuple[str, bool, bool, bool, str]]) -> dict[str, int]:
    """Count (name, project verdict, peer verdict, right verdict, note) rows; add the table's lines to TABLE."""
    counts = {"agree": 0, "project right": 0, "peer right": 0, "both wrong": 0}
    lines = []
    for name, project, peer, right, note in rows:
        if project == peer:
            counts["agree" if project == right else "both wrong"] += 1
            if project != right:
                lines.append(f"  both wrong: {name} (right: {right}; {note})")
        else:
            side = "project right" if project == right else "peer right"
            counts[side] += 1
            lines.append(f"  {side}: {name} (project {project}, peer {peer}, right {right}"
                         + (f"; {note}" if note else "") + ")")
    TABLE.append(f"{kind}: {len(rows)} cases: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    TABLE.extend(lines)
    return counts
