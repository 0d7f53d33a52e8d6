"""Answer extraction, scoring and the sandbox that runs generated code.

Every method scores through `score_output(task, output_text, item)`, which returns a `Score`: the prediction,
whether it is correct, the extraction rule that found it and, for code, why the program failed. It looks up the
task's `answer_kind` in the registry of data.py ("number", "integer", "choice", "code") and never branches on task
names; `score_prediction` gives the (prediction, correct) pair alone.

The helpers keep the reference repository's names (`extract_gsm8k_answer`, `extract_gold`, `normalize_answer`,
`extract_markdown_python_block`, `run_with_timeout`) but fix its defects: nested `\\boxed{}`, thousands
separators, fractions, "18.0" == "18", unboxed multiple-choice answers, and code run without isolation.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Callable


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch (each only if installed), like the reference's set_seed."""
    random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass
    try:
        import torch

        torch.manual_seed(seed)
        torch.cuda.manual_seed_all(seed)
    except ImportError:
        pass


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


def score_output(task: str, output_text: str, item: dict) -> Score:
    """The full Score of one model output (prediction, correct, extraction rule, code failure reason)."""
    from data import get_task  # data.py imports this module, so import lazily

    t = get_task(task)
    if t.answer_kind == "choice" and not item.get("choices"):
        return score_choice(output_text or "", item, letters="".join(t.choices) or "ABCD")
    return SCORERS[t.answer_kind](output_text or "", item)


def score_outputs(task: str, output_texts: list[str], items: list[dict], workers: int = 2) -> list[Score]:
    """score_output over a batch; code candidates run in parallel sandboxes, in input order."""
    from data import get_task

    if len(output_texts) != len(items):
        raise ValueError(f"{len(output_texts)} outputs for {len(items)} items")
    if get_task(task).answer_kind != "code" or workers <= 1:
        return [score_output(task, o, it) for o, it in zip(output_texts, items)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda pair: score_output(task, *pair), zip(output_texts, items)))


def score_prediction(task: str, output_text: str, item: dict) -> tuple[str | None, bool]:
    """(prediction, correct) for one model output; the task's answer kind picks the scorer."""
    score = score_output(task, output_text, item)
    return score.prediction, score.correct


def score_predictions(
    task: str, output_texts: list[str], items: list[dict], workers: int = 2
) -> list[tuple[str | None, bool]]:
    """score_prediction over a batch (see score_outputs)."""
    return [(s.prediction, s.correct) for s in score_outputs(task, output_texts, items, workers)]


# ----------------------------------------------------------------------------------------------------------------
# Sandbox
#
# Generated code runs in a fresh `python -I -B` process, in its own session (so one killpg reaches its children),
# with rlimits on memory, CPU, file size, open files and processes, a minimal environment, stdin from /dev/null
# and stdout+stderr in a file capped by RLIMIT_FSIZE (the parent reads only its tail). Three mechanisms, the
# strongest that works is used (see `sandbox_mechanism()`, override with LATENTMAS_SANDBOX):
#   "namespaces": (root) new mount, network and IPC namespaces; /tmp, /var/tmp and /dev/shm replaced by private
#                 tmpfs; directories the interpreter needs behind a closed parent (e.g. /root, mode 700) are
#                 re-exposed read-only on a tmpfs that hides everything else there; then a dedicated uid.
#   "uid":        (root) only the dedicated uid.
#   "rlimits":    rlimits and the process group only (non-root users: no protection of the caller's files);
#                 os.fork/kill/system/exec* and subprocess.Popen are replaced by stubs that raise, a best-effort
#                 guard against accidental fork bombs and kills, not a boundary.
# The dedicated uid is fresh per run and owns no file, so the code cannot change the host's files nor signal
# the caller (kill(getppid()) fails, kill(-1) reaches only its own processes), and RLIMIT_NPROC, which root
# ignores, bounds fork bombs. Memory is capped by RLIMIT_AS (4 GiB: Mbpp/255's own tests peak at 2.2 GB).
# After the run every process with that uid is killed, which also catches children that left the session.
#
# A pass needs exit code 0 AND a per-run random token that the runner prints after the tests: sys.exit(0),
# os._exit(0) or a self-kill before the tests therefore fail. The token travels on stdin, which the runner
# reads before the candidate starts. This stops accidents, not an adversary that inspects the runner's frames.

SANDBOX_UID_BASE = 3_000_000  # dedicated uids are drawn from [BASE, BASE + COUNT); no account uses them
SANDBOX_UID_COUNT = 1_000_000
MECHANISMS = ("namespaces", "uid", "rlimits")

_RUNNER = r'''
import ctypes, json, os, resource, stat, sys
cfg = json.loads(sys.stdin.buffer.readline())
src = sys.stdin.buffer.read().decode("utf-8", "replace")
null = os.open(os.devnull, os.O_RDONLY)
os.dup2(null, 0)
os.close(null)

def isolate(uid):
    libc = ctypes.CDLL(None, use_errno=True)
    def check(rc, what):
        if rc != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")
    def mount(src, target, fstype, flags, data=None):
        enc = lambda s: s.encode() if s is not None else None
        check(libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")
    MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
    check(libc.unshare(0x00020000 | 0x40000000 | 0x08000000), "unshare")  # CLONE_NEWNS | NEWNET | NEWIPC
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    # What the interpreter needs to read, minimal set (drop paths inside another needed path).
    need = {os.path.realpath(p) for p in sys.path + [sys.prefix, sys.base_prefix, sys.exec_prefix,
                                                    os.path.dirname(os.path.realpath(sys.executable))]}
    need = sorted(p for p in need if os.path.isdir(p))
    need = [p for p in need if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in need)]
    def closed(d):
        return not os.stat(d).st_mode & stat.S_IXOTH
    covers = {}
    for p in need:  # the topmost closed strict ancestor of a needed path gets a tmpfs with the path re-bound
        parts = p.strip("/").split("/")
        for i in range(1, len(parts)):
            a = "/" + "/".join(parts[:i])
            if closed(a):
                covers.setdefault(a, "mode=755,size=1m")
                break
    for d in ("/tmp", "/var/tmp", "/dev/shm"):
        if os.path.isdir(d) and not os.path.islink(d):
            covers[d] = "mode=1777,size=64m"
    for target, opts in sorted(covers.items()):
        inside = [p for p in need if p.startswith(target.rstrip("/") + "/")]
        fds = [os.open(p, os.O_PATH | os.O_DIRECTORY) for p in inside]
        mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, opts)
        for p, fd in zip(inside, fds):
            os.makedirs(p, exist_ok=True)
            mount(f"/proc/self/fd/{fd}", p, None, MS_BIND | MS_REC)
            mount(None, p, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
            os.close(fd)

if cfg["isolate"]:
    isolate(cfg["uid"])
if cfg["uid"] is not None:
    os.setgroups([])
    os.setgid(cfg["uid"])
    os.setuid(cfg["uid"])
if cfg["guard"]:  # no dedicated uid contains the program: refuse the calls that reach other processes
    def refused(*args, **kwargs):
        raise PermissionError("blocked by the sandbox (no dedicated uid available)")
    import subprocess
    for name in ("fork", "forkpty", "kill", "killpg", "system", "popen", "posix_spawn", "posix_spawnp",
                 "spawnv", "spawnve", "spawnvp", "spawnvpe", "execv", "execve", "execvp", "execvpe"):
        if hasattr(os, name):
            setattr(os, name, refused)
    subprocess.Popen = refused
os.chdir(cfg["cwd"])
for name, value in cfg["limits"].items():
    resource.setrlimit(getattr(resource, name), (value, value))
token = cfg.pop("token").encode()
del cfg
# The reference exec()'d the program in a fresh dict, so `if __name__ == "__main__":` demo blocks never ran.
namespace = {"__name__": "__solution__", "__builtins__": __builtins__}
exec(compile(src, "solution.py", "exec", dont_inherit=True), namespace)
sys.stdout.flush()
sys.stderr.flush()
os.write(1, b"\n" + token + b"\n")
'''


@dataclass
class SandboxResult:
    ok: bool  # the program ran to its end: exit code 0 and the token printed
    returncode: int | None  # None on timeout; negative: killed by that signal
    timed_out: bool
    output: str  # the tail of stdout + stderr
    elapsed: float
    mechanism: str

    @property
    def error(self) -> str | None:
        if self.ok:
            return None
        if self.timed_out:
            return f"TimeoutError: execution exceeded the time limit ({self.elapsed:.1f} s)"
        tail = self.output.strip()[-2000:]
        if self.returncode is not None and self.returncode < 0:
            name = signal.Signals(-self.returncode).name
            why = {"SIGXFSZ": "output or file size limit exceeded", "SIGXCPU": "CPU time limit exceeded"}
            return f"killed by {name}" + (f" ({why[name]})" if name in why else "") + (f"\n{tail}" if tail else "")
        if self.returncode == 0:
            return "the program exited before its tests finished (sys.exit / os._exit?)" + (f"\n{tail}" if tail else "")
        return tail or f"exit code {self.returncode}"


_uid_lock = threading.Lock()
_uids_in_use: set[int] = set()


def _alloc_uid() -> int:
    with _uid_lock:
        while True:
            uid = SANDBOX_UID_BASE + secrets.randbelow(SANDBOX_UID_COUNT)
            if uid not in _uids_in_use:
                _uids_in_use.add(uid)
                return uid


def _pids_of_uid(uid: int) -> list[int]:
    """Live (non-zombie) processes whose real uid is `uid`."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except (OSError, ValueError):
            continue
        if int(fields.get("Uid", "-1 ").split()[0]) == uid and not fields.get("State", "").strip().startswith("Z"):
            pids.append(int(name))
    return pids


def _kill_uid(uid: int, deadline: float) -> None:
    """SIGKILL every process of a sandbox uid until none is left (a fork bomb keeps forking for a moment)."""
    while time.monotonic() < deadline:
        pids = _pids_of_uid(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.005)


def _limits(timeout: float, memory_mb: int, mechanism: str) -> dict[str, int]:
    limits = {
        "RLIMIT_AS": memory_mb * 2**20,
        "RLIMIT_CPU": int(timeout) + 1,
        "RLIMIT_FSIZE": 32 * 2**20,  # also caps the output file: printing 1 GB ends in SIGXFSZ
        "RLIMIT_NOFILE": 256,
        "RLIMIT_CORE": 0,
    }
    if mechanism != "rlimits":  # per uid: only meaningful for the dedicated uid (root ignores it)
        limits["RLIMIT_NPROC"] = 64
    return limits


def _read_tail(f, n: int = 16384) -> str:
    f.seek(0, os.SEEK_END)
    f.seek(max(0, f.tell() - n))
    return f.read(n).decode("utf-8", "replace")


def _wait(proc: subprocess.Popen, deadline: float) -> bool:
    """Wait for exit WITHOUT reaping (so the process group id stays ours for killpg); False on timeout."""
    while True:
        if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)


def run_sandboxed(code: str, timeout: float = 10, memory_mb: int = 4096, mechanism: str | None = None) -> SandboxResult:
    """Run `code` as a program in the sandbox; see the comment above for what is enforced."""
    mechanism = mechanism or sandbox_mechanism()
    if mechanism not in MECHANISMS:
        raise ValueError(f"unknown sandbox mechanism {mechanism!r}; choose one of {MECHANISMS}")
    token = secrets.token_hex(16)
    workdir = tempfile.mkdtemp(prefix="latentmas-sandbox-")
    uid = _alloc_uid() if mechanism != "rlimits" else None
    cwd = "/tmp" if mechanism == "namespaces" else workdir  # "/tmp" is the private tmpfs there
    if mechanism == "uid":
        os.chown(workdir, uid, uid)
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": cwd,
        "TMPDIR": cwd,
        "MPLBACKEND": "Agg",
        **{k: "1" for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")},
    }
    cfg = {
        "isolate": mechanism == "namespaces",
        "uid": uid,
        "guard": mechanism == "rlimits",
        "cwd": cwd,
        "limits": _limits(timeout, memory_mb, mechanism),
        "token": token,
    }
    payload = json.dumps(cfg).encode() + b"\n" + code.encode("utf-8", "replace")
    out_path = os.path.join(workdir, "output.txt")
    start = time.monotonic()
    try:
        with open(out_path, "w+b") as out:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-B", "-c", _RUNNER],
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
            try:
                try:
                    proc.stdin.write(payload)
                    proc.stdin.close()
                except (BrokenPipeError, OSError):
                    pass  # the runner died early; its output says why
                finished = _wait(proc, start + timeout)
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the group is still ours: the leader is not reaped yet
                except (ProcessLookupError, PermissionError):
                    pass
                if uid is not None:
                    _kill_uid(uid, time.monotonic() + 2.0)
                returncode = proc.wait()
            elapsed = time.monotonic() - start
            output = _read_tail(out)  # through our handle: the program may have unlinked or replaced the file
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if uid is not None:
            with _uid_lock:
                _uids_in_use.discard(uid)
    ran_to_end = finished and returncode == 0 and token in output
    output = output.replace(token, "")
    return SandboxResult(
        ok=ran_to_end,
        returncode=returncode if finished else None,
        timed_out=not finished,
        output=output,
        elapsed=elapsed,
        mechanism=mechanism,
    )


def run_with_timeout(code: str, timeout: float = 10) -> tuple[bool, str | None]:
    """Reference-compatible: (True, None) if `code` ran to its end within `timeout` s, else (False, error)."""
    result = run_sandboxed(code, timeout=timeout)
    return result.ok, result.error


# The runner compiles the program as "solution.py": its frames locate the failing line in candidate + tests.
_SOLUTION_FRAME = re.compile(r'File "solution\.py", line (\d+)')
FAILURE_CHARS = 300  # a reason is one line for predictions.jsonl and the trace, not the whole traceback


def failure_reason(result: SandboxResult, program: str, candidate_lines: int) -> str | None:
    """Why a sandboxed candidate + tests program failed, in one line: the exception and the line it was raised
    at (of the candidate or of the tests, with its source, e.g. "AssertionError at line 3 of the tests: assert
    f(2) == 4"), a timeout, a signal, or an early exit. None when it passed."""
    if result.ok:
        return None
    output = result.output
    start = output.rfind("Traceback (most recent call last):")
    if result.timed_out or start < 0:
        reason = " ".join((result.error or "").split())
        return reason[:FAILURE_CHARS] or f"exit code {result.returncode}"
    after = output[start:].splitlines()[1:]
    # Frames and source lines are indented; the first line that is not is "ExceptionType: message".
    exception = next((line.strip() for line in after if line and not line[0].isspace()), "unknown exception")
    frames = _SOLUTION_FRAME.findall(output[start:])
    where = ""
    if frames:
        number = int(frames[-1])  # the innermost frame in the program: where it was raised
        lines = program.splitlines()
        source = lines[number - 1].strip() if 0 < number <= len(lines) else ""
        part, line = ("candidate", number) if number <= candidate_lines else ("tests", number - candidate_lines)
        where = f" at line {line} of the {part}" + (f": {source}" if source else "")
    return " ".join(f"{exception}{where}".split())[:FAILURE_CHARS]


_mechanism: str | None = None
_mechanism_lock = threading.Lock()


def sandbox_mechanism() -> str:
    """The strongest sandbox mechanism that works here ("namespaces", "uid" or "rlimits"), probed once.

    LATENTMAS_SANDBOX=<name> forces one (e.g. to test the fallbacks).
    """
    global _mechanism
    forced = os.environ.get("LATENTMAS_SANDBOX")
    if forced:
        if forced not in MECHANISMS:
            raise ValueError(f"LATENTMAS_SANDBOX={forced!r}; choose one of {MECHANISMS}")
        return forced
    with _mechanism_lock:
        if _mechanism is None:
            _mechanism = "rlimits"
            if os.geteuid() == 0:
                # the dedicated uid must be able to read every import directory (not so under /root, mode 700)
                probe = (
                    "import os, sys\nassert os.getuid() != 0\nfor p in sys.path:\n"
                    "    try:\n        os.listdir(p)\n    except FileNotFoundError:\n        pass\n"
                )
                for candidate in ("namespaces", "uid"):
                    if run_sandboxed(probe, timeout=20, mechanism=candidate).ok:
                        _mechanism = candidate
                        break
            if _mechanism == "rlimits":
                logging.getLogger(__name__).warning(
                    "sandbox: only rlimits and a process group are available (not root); generated code "
                    "runs as the current user"
                )
        return _mechanism
