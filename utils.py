"""Answer extraction and scoring, one scorer per answer kind ("number", "integer", "choice", "code").

What of an output is read comes first (`read_output`): for an output that thinks, only the text after the last
</think>; outputs cut at the token budget are credited only for an answer they committed to (the fallbacks read
only outputs that ended by EOS); --score_whole_text restores the reference's whole-text rule. Each scorer returns a
`Score`: the prediction, whether it is correct, the extraction rule that found it and, for code, why the program
failed and how many test inputs passed (code_check.py). Tasks pick their scorer through the registry of data.py
(`data.score_output`); nothing here branches on task names.

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

from code_check import check_code
from sandbox import run_with_timeout  # noqa: F401 (the reference's name)


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
# What of an output is read: thinking, and whether the output ended by itself


THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


@dataclass(frozen=True)
class Reading:
    """The part of one model output an answer is read from, and what decides which rules may credit it.

    answer_text: the text after the last </think> of an output that thinks (the whole output of one that does
    not); None when the thinking never closed (rule thinking_not_closed). thinking: the text up to that </think>
    (the whole output when it never closed), None for an output that does not think. cut_at_budget: decoding
    stopped at max_new_tokens, not at EOS. committed_only: the fallbacks that read an answer from where the output
    happened to stop (last number, last line, bold letter) apply only to outputs that ended by EOS; False with
    --score_whole_text, which also reads the whole output, thinking included, as the reference did.
    """

    answer_text: str | None
    thinking: str | None = None
    cut_at_budget: bool = False
    committed_only: bool = True

    @property
    def fallbacks_allowed(self) -> bool:
        return not (self.committed_only and self.cut_at_budget)


# How answers are read, as summary.json's settings name it (the key: --score_whole_text).
ANSWER_RULES = {
    False: "committed answers: read after the last </think> (thinking never closed: no answer); the last-number, "
           "last-line and bold-letter fallbacks only for outputs that ended by EOS, not for outputs cut at the budget",
    True: "whole text (--score_whole_text, the reference's rule): the whole output, thinking included; the fallbacks "
          "for every output",
}


def read_output(text: str | None, prompt: str = "", cut_at_budget: bool = False, whole_text: bool = False) -> Reading:
    """How `text` (an output that continues the rendered `prompt`) is read.

    An output thinks when it holds <think> or </think>, or when its prompt ends with an open <think> (the
    reference's --think, and templates that open the thinking themselves); its answer is read only after the last
    </think>, and none is read when thinking opened after the last </think> or never closed (lighteval's and
    lm-evaluation-harness's rule). whole_text: the reference's rule (the whole output, any output).
    """
    text = text or ""
    opened = prompt.rstrip().endswith(THINK_OPEN) or THINK_OPEN in text or THINK_CLOSE in text
    thinking = answer = None
    if opened:
        close = text.rfind(THINK_CLOSE)
        if close >= 0 and text.rfind(THINK_OPEN) < close:
            thinking, answer = text[:close], text[close + len(THINK_CLOSE):]
        else:
            thinking = text
    else:
        answer = text
    if whole_text:
        return Reading(text, thinking, cut_at_budget, committed_only=False)
    return Reading(answer, thinking, cut_at_budget)


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


# Minus signs and thousands separators as real outputs write them: U+2212 and its kin; a thin, narrow or
# no-break space, "\," "\;" "\ " "\!" or "{,}" between digit groups ("70\,000", "1 000" with U+202F).
_MINUS = re.compile("[\u2212\ufe63\uff0d]")
_THIN_SEPARATOR = re.compile(r"(?<=\d)(?:\\[,;! ]|\{,\}|[\u2009\u202f\u00a0\u2007])(?=\d{3}(?!\d))")
# Plain spaces between groups of three ("70 000"), only inside an answer the output committed to: in prose,
# "5 100 200" is three numbers.
_SPACE_GROUPS = re.compile(r"(?<![\d.,])(\d{1,3})((?: \d{3})+)(?![\d,])")


def normalize_number_text(text: str) -> str:
    """Minus signs as "-", thin-space and LaTeX thousands separators removed (see _MINUS, _THIN_SEPARATOR)."""
    return _THIN_SEPARATOR.sub("", _MINUS.sub("-", text))


_ANSWER_PHRASE = re.compile(
    r"(?:final answer|answer)\s*(?:is|was|would be|should be|:|=)\s*[:\s*_]*(.{0,120})", re.IGNORECASE | re.DOTALL
)
# The math right after an answer phrase ends at the first word of prose (two letters or more, not a LaTeX
# command), a line break, the end of a sentence or a semicolon: "12, because 3 x 4 = 12" commits to 12.
_PROSE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}|\n|\.(?=\s|$)|;")
_RATIO = re.compile(rf"({_NUM})\s*/\s*({_NUM})")


_OPERATOR = re.compile(r"\d\s*(?:\\times|×|\\cdot|\*|\^|\+|-)\s*[\d{\\(]")


def _committed_value(chunk: str) -> str | None:
    """The value an answer phrase commits to: "12", "3 \\times 4 = 12" -> "12", "$18 + $2 = $20." -> "20",
    "\\frac{1}{2}", "3/4", "70 000"; an expression without its value ("1.5 \\times 10^3") as written, for
    math-verify."""
    math = _SPACE_GROUPS.sub(lambda m: m.group(1) + m.group(2).replace(" ", ""), _PROSE.split(chunk, 1)[0])
    math = re.split(r"=|\\approx|≈", math)[-1]  # an equation: its value is on the right
    whole = _clean_math(math).strip(" .,:;!?()*_")
    if whole and parse_number(whole) is None and _OPERATOR.search(whole):
        return whole
    candidates = [m for m in (_FRAC.search(math), _RATIO.search(math), _NUM_RE.search(math)) if m]
    return min(candidates, key=lambda m: (m.start(), -len(m.group(0)))).group(0) if candidates else None


def _answer_phrase_number(text: str) -> str | None:
    """The value after the last "answer is" / "Answer:" / "####" that gives one."""
    hits = [(m.start(), m.group(1)) for m in _ANSWER_PHRASE.finditer(text)]
    hits += [(m.start(), m.group(1)) for m in re.finditer(rf"####\s*\$?\s*({_NUM})", text)]
    for _, chunk in sorted(hits, reverse=True):
        value = _committed_value(chunk)
        if value is not None:
            return value
    return None


@dataclass(frozen=True)
class Extraction:
    """An answer pulled out of a model's output, and the rule that found it.

    Rules, strongest first. Every kind: thinking_not_closed (the output thinks and its thinking never closed: no
    answer). Numbers: last_boxed, answer_phrase ("the answer is N", "Answer: 3 x 4 = N", "#### N"), last_number
    (only for outputs that ended by EOS). Choices: choice_boxed, choice_phrase ("The answer is (B)"),
    choice_phrase_text ("The answer is Oral ulcers": an option's text), then only for outputs that ended by EOS:
    choice_last_line (a last line that is only a letter), option_text (a last line that repeats an option's
    text), choice_bold ("**B**"). Code: code_python_block, code_block_defining_entry_point, code_any_block,
    code_unclosed_fence. Numbers and choices: cut_before_answer (cut at the token budget before any commitment:
    no answer). Every kind: none.
    The rule is recorded with every prediction so a reader sees how much of an accuracy rests on fallbacks.
    """

    answer: str | None
    rule: str


NO_ANSWER = Extraction(None, "none")
THINKING_NOT_CLOSED = Extraction(None, "thinking_not_closed")
CUT_BEFORE_ANSWER = Extraction(None, "cut_before_answer")


def _as_reading(output: Reading | str | None) -> Reading:
    """A Reading of `output`; plain text is read as an output that ended by EOS (read_output)."""
    return output if isinstance(output, Reading) else read_output(output)


def extract_number_with_rule(output: Reading | str | None) -> Extraction:
    """extract_gsm8k_answer's answer, and which rule found it (last_boxed / answer_phrase / last_number, ...)."""
    reading = _as_reading(output)
    if reading.answer_text is None:
        return THINKING_NOT_CLOSED
    text = normalize_number_text(reading.answer_text)
    if not text.strip():
        return CUT_BEFORE_ANSWER if not reading.fallbacks_allowed else NO_ANSWER
    raw, rule = last_boxed(text), "last_boxed"
    if raw is None:
        raw, rule = _answer_phrase_number(text), "answer_phrase"
    if raw is None:
        if not reading.fallbacks_allowed:
            return CUT_BEFORE_ANSWER
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


def extract_code_with_rule(output: Reading | str | None, entry_point: str | None = None) -> Extraction:
    """extract_markdown_python_block's code, and which rule found it (code_python_block, ...)."""
    reading = _as_reading(output)
    if reading.answer_text is None:
        return THINKING_NOT_CLOSED
    text = reading.answer_text
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


# An answer phrase for choices: "The answer is", "Answer:", "final answer:", "correct option is", "best choice:".
# Words match in any case; what follows is read by _phrase_choice.
_CHOICE_PHRASE = re.compile(
    r"(?i:\banswer|(?:correct|right|best)\s+(?:option|choice|answer))\s*(?i:is|would be|should be|:)?"
    r"[\s:*_`\"']*(?i:(?:option|choice)\s*)?"
)
# "A" followed by one of these is the letter ("A because ..."); followed by any other lower-case word it is the
# article ("A decrease in ...").
_AFTER_LETTER = {"because", "since", "as", "and", "or", "is", "was", "which", "for", "so", "but", "here", "there",
                 "given", "due", "seems", "appears", "would", "should", "could", "fits", "matches"}


def _option_key(text: str) -> str:
    return " ".join(re.sub(r"[*_`\"'$]", "", text).lower().split()).rstrip(".")


def _option_by_text(text: str, options: dict[str, str] | None) -> str | None:
    """The option whose text `text` starts with (the longest such option), else None."""
    key = _option_key(text)
    if not options or not key:
        return None
    hits = [(len(k), letter) for letter, t in options.items()
            if (k := _option_key(str(t))) and key.startswith(k) and not key[len(k):len(k) + 1].isalnum()]
    return max(hits)[1] if hits else None


def _phrase_choice(after: str, letters: str, options: dict[str, str] | None) -> tuple[str, str] | None:
    """(letter, rule) that the text right after an answer phrase commits to, or None: an option's text
    (choice_phrase_text) or a letter, "(B)", "[b]", "B." (choice_phrase); an article "A" is no letter."""
    line = after.split("\n", 1)[0]
    if (letter := _option_by_text(line, options)) is not None:
        return letter, "choice_phrase_text"
    L, low = re.escape(letters.upper()), re.escape(letters.lower())
    m = re.match(rf"\(([{L}{low}])\)|\[([{L}{low}])\]|([{L}])(?![A-Za-z0-9])", line)
    if not m:
        return None
    letter = next(g for g in m.groups() if g).upper()
    word = re.match(r"\s+([a-z]+)\b", line[m.end():]) if m.group(3) == "A" else None
    if word and word.group(1) not in _AFTER_LETTER:
        return None  # "The answer is A decrease in ...": the article
    return letter, "choice_phrase"


@lru_cache(maxsize=64)
def _choice_patterns(letters: str) -> tuple[re.Pattern, re.Pattern, re.Pattern]:
    """Regexes for one set of valid letters: "Option C is correct", a bold letter, a last line that is a letter."""
    L = re.escape(letters.upper())
    option_is = re.compile(rf"(?i:\b(?:option|choice))\s+\(?([{L}])\)?\s+(?i:is\s+(?:the\s+)?(?:correct|right|best))")
    bold = re.compile(rf"\*\*\s*\(?([{L}])\)?(?:[.):][^*\n]*)?\*\*")  # **B**, **(B)**, **B. Oral ulcers**
    last_line = re.compile(rf"^\s*\(?([{L}])\)?\s*(?:[.):]\s*.*)?$")  # "C", "(C)", "C. Colorectal cancer"
    return option_is, bold, last_line


def _letter_from_text(content: str, letters: str, options: dict[str, str] | None) -> str | None:
    """A choice written inside a box: "B", "(b)", "\\text{B}", "B. Oral ulcers", or the option's own text."""
    s = _clean_math(content) if "\\" in content else content
    s = s.strip().strip("*_`'\" ").rstrip(".")
    m = re.fullmatch(r"\(?\s*([A-Za-z])\s*\)?(?:[.):]\s*.*)?", s, re.DOTALL)
    if m and m.group(1).upper() in letters:
        return m.group(1).upper()
    if options:
        key = _option_key(s)
        for letter, text in options.items():
            if key and key == _option_key(str(text)):
                return letter
    m = re.search(rf"\b(?:option|choice)\s*\(?([{re.escape(letters)}])\b", s, re.IGNORECASE)
    return m.group(1).upper() if m else None


def extract_choice_with_rule(output: Reading | str | None, letters: str = "ABCD",
                             options: dict[str, str] | None = None) -> Extraction:
    """extract_choice's letter, and which rule found it (choice_boxed, choice_phrase, ...)."""
    reading = _as_reading(output)
    if reading.answer_text is None:
        return THINKING_NOT_CLOSED
    text = reading.answer_text
    letters = letters.upper()
    if not text.strip():
        return CUT_BEFORE_ANSWER if not reading.fallbacks_allowed else NO_ANSWER
    boxed = last_boxed(text)
    if boxed is not None:
        letter = _letter_from_text(boxed, letters, options)
        if letter:
            return Extraction(letter, "choice_boxed")
    option_is, bold, last_line = _choice_patterns(letters)
    hits = [(m.start(), found) for m in _CHOICE_PHRASE.finditer(text)
            if (found := _phrase_choice(text[m.end():], letters, options))]
    hits += [(m.start(), (m.group(1), "choice_phrase")) for m in option_is.finditer(text)]
    if hits:
        return Extraction(*max(hits)[1])
    if not reading.fallbacks_allowed:
        return CUT_BEFORE_ANSWER
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    last = lines[-1].strip().strip("*_`> ").replace("Answer:", "").strip() if lines else ""
    m = last_line.fullmatch(last)
    if m:
        return Extraction(m.group(1), "choice_last_line")
    if options and last and (letter := _letter_from_text(last, letters, options)):
        return Extraction(letter, "option_text")
    bolds = [(m.start(), m.group(1)) for m in bold.finditer(text)]
    return Extraction(max(bolds)[1], "choice_bold") if bolds else NO_ANSWER


def extract_choice(text: str | None, letters: str = "ABCD", options: dict[str, str] | None = None) -> str | None:
    """The chosen letter (upper case) among `letters`, boxed or not; None when the output commits to none.

    Order: the last \\boxed{}; else the last explicit phrase ("The answer is (B)", "Answer: C", "The answer is
    Oral ulcers"); else a final line that is only a letter or an echoed option ("C. Colorectal cancer"), else the
    last bold letter ("**B**").
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
    tests_checked: int | None = None  # code: inputs whose output passed its comparison (None: not counted)
    tests_total: int | None = None  # code: the harness's inputs (None: not counted)


def _score_numeric(reading: Reading, gold: str, integer: bool) -> Score:
    found = extract_number_with_rule(reading)
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


def score_number(reading: Reading, item: dict) -> Score:
    """Numeric equality of the final answer with the gold (18 == 18.0, 1,000 == 1000, \\frac{1}{2} == 0.5)."""
    return _score_numeric(reading, item["gold"], integer=False)


def score_integer(reading: Reading, item: dict) -> Score:
    """AIME: the answer must be an integer equal to the gold ("070" == 70; 70.5 is wrong)."""
    return _score_numeric(reading, item["gold"], integer=True)


def score_choice(reading: Reading, item: dict, letters: str = "ABCD") -> Score:
    """The chosen letter against the gold letter (case-insensitive)."""
    options = item.get("choices") or None
    valid = "".join(options) if options else letters
    found = extract_choice_with_rule(reading, valid, options)
    pred = found.answer
    return Score(pred, pred is not None and pred == str(item["gold"]).strip().upper(), found.rule)


def score_code(reading: Reading, item: dict) -> Score:
    """The last python block checked against the benchmark's tests (item["gold"]) by code_check.check_code."""
    found = extract_code_with_rule(reading, item.get("entry_point"))
    code = found.answer
    if code is None:
        why = "the thinking never closed" if found.rule == "thinking_not_closed" else "no code block in the output"
        return Score(None, False, found.rule, why)
    verdict = check_code(code, item)
    return Score(code, verdict.passed, found.rule, verdict.failure, verdict.checked, verdict.total)


SCORERS: dict[str, Callable[[Reading, dict], Score]] = {
    "number": score_number,
    "integer": score_integer,
    "choice": score_choice,
    "code": score_code,
}
