"""Answer extraction and scoring, one scorer per answer kind ("number", "integer", "choice", "code").

Each scorer returns a `Score`: the prediction, whether it is correct, the extraction rule that found it and, for
code, why the program failed (generated code runs in sandbox.py). Tasks pick their scorer through the registry
of data.py (`data.score_output`); nothing here branches on task names.

The helpers keep the reference repository's names (`extract_gsm8k_answer`, `extract_gold`, `normalize_answer`,
`extract_markdown_python_block`, `run_with_timeout`) but fix its defects: nested `\\boxed{}`, thousands
separators, fractions, "18.0" == "18", unboxed multiple-choice answers, and code run without isolation.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Callable

from sandbox import failure_reason, run_sandboxed, run_with_timeout  # noqa: F401 (run_with_timeout: the reference's name)


# ----------------------------------------------------------------------------------------------------------------
# Numbers

# A number as models write it: optional sign, thousands separators only in groups of three ("1,000", not "1,00"),
# optional decimals. The comma alternative comes first so "1,000" is one token, not "1" then "000".
_NUM = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+"
_NUM_RE = re.compile(_NUM)

# LaTeX wrappers whose content is kept: \text{ dollars} -> " dollars" (then dropped as a unit word).
_TEXT_CMD = re.compile(
    r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mathit|mbox|operatorname|boldsymbol)\s*\{([^{}]*)\}"
)
_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_FRAC_SHORT = re.compile(r"\\[dt]?frac\s*(\d)\s*(\d)")  # \frac12
# Things a model puts around a number that do not change its value.
_NOISE = [
    "\\left", "\\right", "\\displaystyle", "\\(", "\\)", "\\[", "\\]", "\\$", "$", "\\%", "%", "\\!",
    "^{\\circ}", "^\\circ", "°", "\\circ", "\\degree",
]
# A leftover that is only words and punctuation is a unit ("dollars", "cm.", "apples each").
_UNIT_ONLY = re.compile(r"[\sA-Za-z.,:;'\"()]*")


def _clean_math(s: str) -> str:
    """Strip LaTeX decoration around a single answer, keeping what can change its value."""
    s = s.replace("\u2212", "-").replace("{,}", ",").replace("\\,", "").replace("\\;", " ").replace("\\ ", " ")
    for _ in range(3):  # unwrap nested \text{\textbf{..}}
        s = _TEXT_CMD.sub(r" \1 ", s)
    for _ in range(3):
        s = _FRAC.sub(r"(\1)/(\2)", s)
    s = _FRAC_SHORT.sub(r"\1/\2", s)
    for tok in _NOISE:
        s = s.replace(tok, " ")
    s = re.split(r"=|\\approx|≈", s)[-1]  # "x = 5", "3 \times 4 = 12": the value is on the right
    return s.strip()


def _to_fraction(tok: str) -> Fraction:
    return Fraction(tok.replace(",", "").replace("+", ""))


def parse_number(text: str | None) -> Fraction | None:
    """Exact value of a single numeric answer ("1,000", "\\frac{1}{2}", "$18.00", "50\\%", "5 dollars"), else None.

    Returns None for anything that is not one plain number (expressions, several numbers), so the caller can
    hand it to math-verify instead of guessing.
    """
    if text is None:
        return None
    s = _clean_math(text)
    if not s:
        return None
    bare = re.sub(r"[A-Za-z.\s]+$", "", s)  # "1/2 cup" -> "1/2"
    m = re.fullmatch(r"(-?)(\d+)\s*\((\d+)\)/\((\d+)\)", bare) or re.fullmatch(r"(-?)(\d+) (\d+)/(\d+)", bare)
    if m and int(m.group(4)):  # mixed numbers: 2\frac{1}{2}, "2 1/2"
        value = int(m.group(2)) + Fraction(int(m.group(3)), int(m.group(4)))
        return -value if m.group(1) else value
    m = re.fullmatch(rf"(-?)\(?({_NUM})\)?/\(?({_NUM})\)?", bare.replace(" ", ""))  # a/b, -(a)/(b) from \frac
    if m:
        num, den = _to_fraction(m.group(2)), _to_fraction(m.group(3))
        return None if den == 0 else (-num / den if m.group(1) else num / den)
    if re.fullmatch(r"-?\d{1,3}(?: \d{3})+(?:\.\d+)?", s):  # "1 000 000"
        return _to_fraction(s.replace(" ", ""))
    toks = _NUM_RE.findall(s)
    if len(toks) != 1:
        return None
    rest = s.replace(toks[0], " ", 1)
    if "\\" in rest or not _UNIT_ONLY.fullmatch(rest):
        return None  # \sqrt{2}, 2^{10}, 3+4: not a plain number
    return _to_fraction(toks[0])


def format_number(x: Fraction) -> str:
    """Canonical text of a number: "1000", "0.5", "-3", "1/3"."""
    if x.denominator == 1:
        return str(x.numerator)
    d = x.denominator
    while d % 2 == 0:
        d //= 2
    while d % 5 == 0:
        d //= 5
    if d == 1:  # terminating decimal
        return format(float(x), ".15g") if abs(x) < 10**15 else str(x)
    return f"{x.numerator}/{x.denominator}"


def numbers_equal(a: Fraction, b: Fraction) -> bool:
    """Exact equality, with a relative tolerance for rounded decimals (0.3333333 vs 1/3 is still not equal)."""
    return a == b or abs(a - b) <= Fraction(1, 10**9) * max(1, abs(b))


# ----------------------------------------------------------------------------------------------------------------
# Extraction


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}), braces matched so \\boxed{\\frac{1}{2}} stays whole."""
    if not text:
        return None
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    for start in reversed(starts):
        depth, i = 1, start
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            return text[start : i - 1].strip()
    bare = re.findall(r"\\boxed\s+([^\s$]+)", text)  # "\boxed 5" (no braces)
    return bare[-1] if bare else None


_ANSWER_PHRASE = re.compile(
    r"(?:final answer|answer)\s*(?:is|was|would be|should be|:|=)\s*[:\s*_]*(.{0,80})", re.IGNORECASE
)


def _answer_phrase_number(text: str) -> str | None:
    """The number right after the last "answer is" / "Answer:" / "####"."""
    hits = [(m.start(), m.group(1)) for m in _ANSWER_PHRASE.finditer(text)]
    hits += [(m.start(), m.group(1)) for m in re.finditer(rf"####\s*\$?\s*({_NUM})", text)]
    for _, chunk in sorted(hits, reverse=True):
        frac = _FRAC.search(chunk)
        tok = _NUM_RE.search(chunk)
        if frac and (not tok or frac.start() <= tok.start()):
            return frac.group(0)
        if tok:
            return tok.group(0)
    return None


@dataclass(frozen=True)
class Extraction:
    """An answer pulled out of a model's output, and the rule that found it.

    Rules, strongest first. Numbers: last_boxed, answer_phrase ("the answer is N", "Answer: N", "#### N"),
    last_number. Choices: choice_boxed, choice_phrase ("The answer is (B)"), choice_last_line (a last line that is
    only a letter), option_text (a last line that repeats an option's text), choice_bold ("**B**"). Code:
    code_python_block, code_block_defining_entry_point, code_any_block, code_unclosed_fence. Every kind: none.
    The rule is recorded with every prediction so a reader sees how much of an accuracy rests on fallbacks.
    """

    answer: str | None
    rule: str


NO_ANSWER = Extraction(None, "none")


def extract_number_with_rule(text: str | None) -> Extraction:
    """extract_gsm8k_answer's answer, and which of last_boxed / answer_phrase / last_number found it."""
    if not text:
        return NO_ANSWER
    raw, rule = last_boxed(text), "last_boxed"
    if raw is None:
        raw, rule = _answer_phrase_number(text), "answer_phrase"
    if raw is None:
        nums = _NUM_RE.findall(text)
        raw, rule = (nums[-1] if nums else None), "last_number"
    if raw is None:
        return NO_ANSWER
    value = parse_number(raw)
    return Extraction(format_number(value) if value is not None else raw, rule)


def extract_gsm8k_answer(text: str | None) -> str | None:
    """The model's final numeric answer as text: last \\boxed{}, else "answer is N", else the last number.

    A parseable answer comes back canonical ("1,000" -> "1000", "\\frac{1}{2}" -> "0.5", "18.0" -> "18"); a box
    that holds something else (an expression) comes back as written.
    """
    return extract_number_with_rule(text).answer


def extract_gold(text: str | None) -> str | None:
    """GSM8K gold: the whole number after "####", thousands separators included ("#### 2,125" -> "2125")."""
    if not text:
        return None
    m = re.search(r"####\s*(.+)", text)
    if not m:
        return None
    value = parse_number(m.group(1).strip())
    return format_number(value) if value is not None else None


def normalize_answer(ans: str | None) -> str | None:
    """Canonical form for comparing answers: numbers as "1000"/"0.5", anything else stripped and lower-cased."""
    if ans is None:
        return None
    ans = str(ans).strip()
    value = parse_number(ans)
    return format_number(value) if value is not None else ans.lower()


def extract_code_with_rule(text: str | None, entry_point: str | None = None) -> Extraction:
    """extract_markdown_python_block's code, and which rule found it (code_python_block, ...)."""
    if not text:
        return NO_ANSWER
    blocks = re.findall(r"```[ \t]*(python3?|py)?[ \t]*\n(.*?)```", text, re.DOTALL | re.IGNORECASE)
    python = [code.strip() for lang, code in blocks if lang]
    anyblock = [code.strip() for _, code in blocks]
    for candidates, rule in ((python, "code_python_block"), (anyblock, "code_any_block")):
        if not candidates:
            continue
        if entry_point and not re.search(rf"\bdef\s+{re.escape(entry_point)}\s*\(", candidates[-1]):
            defining = [c for c in candidates if re.search(rf"\bdef\s+{re.escape(entry_point)}\s*\(", c)]
            if defining:
                return Extraction(defining[-1], "code_block_defining_entry_point")
        return Extraction(candidates[-1], rule)
    m = re.search(r"```[ \t]*(?:python3?|py)[ \t]*\n(.*)$", text, re.DOTALL | re.IGNORECASE)
    if m and m.group(1).strip():
        return Extraction(m.group(1).strip(), "code_unclosed_fence")
    return NO_ANSWER


def extract_markdown_python_block(text: str | None, entry_point: str | None = None) -> str | None:
    """The code of the model's answer: the last ```python block.

    Falls back, in order, to the last block that defines `entry_point` (models often end with a block of
    example asserts), to any last ``` block, and to an unclosed ```python block cut off by the token budget.
    """
    return extract_code_with_rule(text, entry_point).answer


@lru_cache(maxsize=64)
def _choice_patterns(letters: str) -> tuple[list[re.Pattern], list[re.Pattern]]:
    """Regexes for one set of valid letters, as (explicit answer phrases, weaker cues)."""
    L, low = re.escape(letters.upper()), re.escape(letters.lower())
    end = r"(?![A-Za-z0-9])"
    explicit = [
        # "The answer is (B)", "Answer: (b)", "**Answer:** **C**", "final answer: D", "correct option is A"
        # Words match in any case, a bare letter only in upper case ("the answer is a bit" is not A).
        re.compile(
            rf"(?i:\banswer|(?:correct|right|best)\s+(?:option|choice))\s*(?i:is|would be|should be|:)?"
            rf"[\s:*_`\"']*(?i:(?:option|choice)\s*)?(?:\(([{L}{low}])\)|\[([{L}{low}])\]|([{L}]){end})"
        ),
        re.compile(rf"(?i:\b(?:option|choice))\s+\(?([{L}])\)?\s+(?i:is\s+(?:the\s+)?(?:correct|right|best))"),
    ]
    weak = [
        re.compile(rf"\*\*\s*\(?([{L}])\)?(?:[.):][^*\n]*)?\*\*"),  # **B**, **(B)**, **B. Oral ulcers**
        re.compile(rf"^\s*\(?([{L}])\)?\s*(?:[.):]\s*.*)?$"),  # last line "C", "(C)", "C. Colorectal cancer"
    ]
    return explicit, weak


def _letter_from_text(content: str, letters: str, options: dict[str, str] | None) -> str | None:
    """A choice written inside a box: "B", "(b)", "\\text{B}", "B. Oral ulcers", or the option's own text."""
    s = _clean_math(content) if "\\" in content else content
    s = s.strip().strip("*_`'\" ").rstrip(".")
    m = re.fullmatch(r"\(?\s*([A-Za-z])\s*\)?(?:[.):]\s*.*)?", s, re.DOTALL)
    if m and m.group(1).upper() in letters:
        return m.group(1).upper()
    if options:
        key = " ".join(s.lower().split())
        for letter, text in options.items():
            if key and key == " ".join(str(text).lower().split()).rstrip("."):
                return letter
    m = re.search(rf"\b(?:option|choice)\s*\(?([{re.escape(letters)}])\b", s, re.IGNORECASE)
    return m.group(1).upper() if m else None


def extract_choice_with_rule(text: str | None, letters: str = "ABCD",
                             options: dict[str, str] | None = None) -> Extraction:
    """extract_choice's letter, and which rule found it (choice_boxed, choice_phrase, ...)."""
    if not text:
        return NO_ANSWER
    letters = letters.upper()
    boxed = last_boxed(text)
    if boxed is not None:
        letter = _letter_from_text(boxed, letters, options)
        if letter:
            return Extraction(letter, "choice_boxed")
    explicit, weak = _choice_patterns(letters)
    hits = [(m.start(), next(g for g in m.groups() if g)) for p in explicit for m in p.finditer(text)]
    if hits:
        return Extraction(max(hits)[1].upper(), "choice_phrase")
    bold = [(m.start(), m.group(1)) for m in weak[0].finditer(text)]
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    last = lines[-1].strip().strip("*_`> ").replace("Answer:", "").strip() if lines else ""
    m = weak[1].fullmatch(last)
    if m:
        return Extraction(m.group(1), "choice_last_line")
    if options and last and (letter := _letter_from_text(last, letters, options)):
        return Extraction(letter, "option_text")
    return Extraction(max(bold)[1], "choice_bold") if bold else NO_ANSWER


def extract_choice(text: str | None, letters: str = "ABCD", options: dict[str, str] | None = None) -> str | None:
    """The chosen letter (upper case) among `letters`, boxed or not; None when the output commits to none.

    Order: the last \\boxed{}; else the last explicit phrase ("The answer is (B)", "Answer: C"); else a final line
    that is only a letter or an echoed option ("C. Colorectal cancer"), else the last bold letter ("**B**").
    """
    return extract_choice_with_rule(text, letters, options).answer


# ----------------------------------------------------------------------------------------------------------------
# Scoring: one function per answer kind, picked through the task registry.

# Off the main thread math-verify's timeouts must be off, and it then warns on every call; silence that warning.
for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(lambda r: "Timeout is disabled" not in r.getMessage())


def _math_verify_equal(gold: str, pred: str) -> bool:
    """math-verify's symbolic equivalence, for answers that are not one plain number (\\sqrt{4}, 2^{5})."""
    try:
        from math_verify import parse, verify
    except ImportError:
        return False
    # Its timeouts use SIGALRM, which only works in the main thread; elsewhere they must be off.
    t = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        g = parse(f"${gold}$", parsing_timeout=t)
        p = parse(f"${pred}$", parsing_timeout=t)
        return bool(g and p and verify(g, p, timeout_seconds=t))
    except Exception:  # a malformed answer is a wrong answer, never a crash
        return False


@dataclass(frozen=True)
class Score:
    """How one model output was scored."""

    prediction: str | None
    correct: bool
    rule: str  # the Extraction rule that produced the prediction ("none": nothing was found)
    failure: str | None = None  # code: why the program did not pass (one line); None when it passed, other kinds


def _score_numeric(output_text: str, gold: str, integer: bool) -> Score:
    found = extract_number_with_rule(output_text)
    pred = found.answer
    if pred is None:
        return Score(None, False, found.rule)
    value, gold_value = parse_number(pred), parse_number(str(gold))
    if gold_value is None:
        return Score(pred, False, found.rule)
    if value is None:  # an expression in the box: let math-verify decide
        return Score(pred, _math_verify_equal(format_number(gold_value), pred), found.rule)
    if integer and value.denominator != 1:
        return Score(pred, False, found.rule)
    return Score(pred, numbers_equal(value, gold_value), found.rule)


def score_number(output_text: str, item: dict) -> Score:
    """Numeric equality of the final answer with the gold (18 == 18.0, 1,000 == 1000, \\frac{1}{2} == 0.5)."""
    return _score_numeric(output_text, item["gold"], integer=False)


def score_integer(output_text: str, item: dict) -> Score:
    """AIME: the answer must be an integer equal to the gold ("070" == 70; 70.5 is wrong)."""
    return _score_numeric(output_text, item["gold"], integer=True)


def score_choice(output_text: str, item: dict, letters: str = "ABCD") -> Score:
    """The chosen letter against the gold letter (case-insensitive)."""
    options = item.get("choices") or None
    valid = "".join(options) if options else letters
    found = extract_choice_with_rule(output_text, valid, options)
    pred = found.answer
    return Score(pred, pred is not None and pred == str(item["gold"]).strip().upper(), found.rule)


def score_code(output_text: str, item: dict) -> Score:
    """Run the last python block followed by the benchmark's tests (item["gold"]) in the sandbox."""
    found = extract_code_with_rule(output_text, item.get("entry_point"))
    code = found.answer
    if code is None:
        return Score(None, False, found.rule, "no code block in the output")
    program = code + "\n" + item["gold"]
    result = run_sandboxed(program, timeout=item.get("timeout", 10.0))
    return Score(code, result.ok, found.rule, failure_reason(result, program, len(code.splitlines())))


SCORERS: dict[str, Callable[[str, dict], Score]] = {
    "number": score_number,
    "integer": score_integer,
    "choice": score_choice,
    "code": score_code,
}
