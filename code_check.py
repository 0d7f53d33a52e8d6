"""Checking generated code against a benchmark's tests where the program under test cannot reach the checks.

The reference ran candidate + tests as one program, so a candidate could switch its tests off: rebind a builtin
the test loop uses, or the harness's comparison helper, and every test "passed". Here an EvalPlus-style harness
(MBPP+ and HumanEval+: a list `inputs = [...]`, a comparison helper and a loop calling the function under test
with `*inp`; `parse_harness`) is checked in two sandboxed processes that share nothing but a pipe:

- the candidate's process (_CANDIDATE): evaluates the inputs before the candidate's code is loaded, loads the
  code, calls the function on a deep copy of every input under that input's time limit and sends each output
  (or the exception, or the timeout) down the pipe, in order;
- the checker's process (_CHECKER): runs the benchmark's own harness unchanged, with the function under test
  replaced by a stand-in that returns the outputs received, in order. The expected outputs, the comparison
  helper and the count of checked inputs exist only here, where no candidate code runs.

A pass needs the harness to run to its end with every input checked (checked == total); the count is recorded
with every prediction. Outputs travel as pickles that can hold only plain values: subclasses of builtin types
are sent as their base type (a value that claims to equal everything is sent as what it contains), iterators as
their items, numpy arrays and scalars as themselves, anything else as an opaque stand-in equal to nothing; the
checker's unpickler accepts only those types.

Time limits per input as EvalPlus: max(1 s, 4 x the reference solution's time on that input), the times measured
once per item and process on this machine by the same runner (`reference_times`); the whole run is cut at
min(sum of the limits, max(60 s, 4 x the reference's total)) plus START_SECONDS for the interpreter, the
imports and the candidate's own top-level code. Without a reference solution every input gets the 1 s floor.

A harness of another shape (plain asserts: items you write yourself) runs as one program, the reference's way
(candidate, then the tests, under the item's "timeout"); its checked/total is unknown (None).
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import pickle
import secrets
import struct
import threading
from dataclasses import dataclass
from functools import lru_cache

from sandbox import FAILURE_CHARS, SandboxResult, SandboxRun, failure_reason, run_sandboxed

MIN_LIMIT = 1.0  # EvalPlus's DEFAULT_MIN_TIME_LIMIT
LIMIT_FACTOR = 4.0  # EvalPlus's DEFAULT_GT_TIME_LIMIT_FACTOR
TOTAL_FLOOR = 60.0  # EvalPlus's EVALPLUS_TIMEOUT_PER_TASK default: the whole run may always take this long
START_SECONDS = 10.0  # interpreter start, numpy import and the candidate's top-level code, before the first input
REFERENCE_RUN_SECONDS = 600.0  # the reference solution's timing run
DEFAULT_PROGRAM_TIMEOUT = 10.0  # one-program mode (the reference's 10 s)


@dataclass(frozen=True)
class Harness:
    """What the candidate's process needs from an EvalPlus-style harness (never the expected outputs)."""

    callee: str  # the name the tests call with *inp: the function under test
    setup: str  # the harness's top-level imports, which the inputs may use (numpy, math.inf)
    inputs: str  # the source of the inputs list
    total: int  # how many inputs


@lru_cache(maxsize=64)
def parse_harness(tests: str) -> Harness | None:
    """The Harness of EvalPlus-style test code, or None for any other shape."""
    try:
        tree = ast.parse(tests)
    except SyntaxError:
        return None
    defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    lists = [n.value for n in ast.walk(tree) if isinstance(n, ast.Assign) and isinstance(n.value, (ast.List, ast.Tuple))
             and any(isinstance(t, ast.Name) and t.id == "inputs" for t in n.targets)]
    callees = {n.func.id for n in ast.walk(tree)
               if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and len(n.args) == 1 and not n.keywords
               and isinstance(n.args[0], ast.Starred) and isinstance(n.args[0].value, ast.Name)
               and n.args[0].value.id == "inp"} - defined
    if len(lists) != 1 or len(callees) != 1:
        return None
    setup = "\n".join(ast.get_source_segment(tests, n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)))
    return Harness(callees.pop(), setup, ast.get_source_segment(tests, lists[0]), len(lists[0].elts))


# ----------------------------------------------------------------------------------------------------------------
# The two processes. Frames on the pipe: an 8-byte length, then a pickle of one tuple:
#   ("out", i, seconds, value)      input i's output (value None in a timing run)
#   ("error", i, type, message, line)  an exception at input i (i = -1: while loading the program; line: in it)
#   ("timeout", i, seconds, limit)  input i ran over its limit
#   ("done", n)                     all n inputs were called

# Stand-ins for outputs that are not plain values, defined in both processes (pickled by reference as __main__.*).
_TRANSFER_TYPES = r'''
class Opaque:
    """An output that is not a plain value: equal to nothing (but itself)."""
    def __init__(self, what):
        self.what = what
    def __repr__(self):
        return self.what

class Iterator:
    """An iterator's (generator's, map's, ...) items: iterable once, equal to nothing, as the iterator was."""
    def __init__(self, items):
        self.items = iter(items)
    def __iter__(self):
        return self.items
    def __next__(self):
        return next(self.items)
    def __repr__(self):
        return "<iterator>"

import collections.abc as _abc
class View(_abc.Set):
    """A dict's keys() or items(): compares as a set, iterates in order."""
    def __init__(self, items):
        self.items = list(items)
    def __contains__(self, x):
        return x in self.items
    def __iter__(self):
        return iter(self.items)
    def __len__(self):
        return len(self.items)
    def __repr__(self):
        return f"view({self.items!r})"
'''

_CANDIDATE = _TRANSFER_TYPES + r'''
# The candidate shares this interpreter and can tamper with anything here; that changes only what it sends, and the
# checker, which holds the expected outputs, decides.
import collections, copy, io, pickle, signal, struct, time, traceback, types
channel = open(cfg["channel"], "wb")
limits, send_values = cfg["limits_per_input"], cfg["send_values"]

def numpy_types():
    numpy = sys.modules.get("numpy")
    return (numpy.ndarray, numpy.generic, numpy.dtype) if numpy else ()

class Sender(pickle.Pickler):
    """Plain values as they are (subclasses as their base type), numpy as itself, the rest as stand-ins."""
    def reducer_override(self, obj):
        t = type(obj)
        if t in (complex, bytearray, range, slice, set, frozenset) or t.__module__ in ("fractions", "decimal") \
                or t.__module__.split(".")[0] == "numpy" and isinstance(obj, numpy_types()) \
                or t is collections.deque or isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)):
            return NotImplemented  # classes and functions by reference: the checker accepts only its few
        for base in (int, float, complex, str, bytes, list, tuple, dict, set, frozenset):
            if isinstance(obj, base):
                return base, (base(obj),)
        if t in (type({}.keys()), type({}.items())):
            return View, (list(obj),)
        if isinstance(obj, types.GeneratorType) or (hasattr(t, "__next__") and hasattr(t, "__iter__")) \
                or t is type({}.values()):
            return Iterator, (list(obj),)
        return Opaque, (f"<{t.__module__}.{t.__qualname__} object>",)

def frame_bytes(frame):
    buffer = io.BytesIO()
    Sender(buffer, protocol=5).dump(frame)
    return buffer.getvalue()

def send(data):
    channel.write(struct.pack(">Q", len(data)) + data)
    channel.flush()

class InputTimeout(BaseException):
    pass

def alarm(signum, frame):
    raise InputTimeout()

def error(i, exc):
    # The line of the candidate's code it was raised at (the innermost frame there).
    lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if f.filename == "solution.py"]
    line = exc.lineno if isinstance(exc, SyntaxError) and exc.filename == "solution.py" else (lines or [None])[-1]
    try:
        message = str(exc)[:500]
    except BaseException:
        message = "(its message could not be read)"
    send(frame_bytes(("error", i, type(exc).__name__, message, line)))
    raise SystemExit(0)

# The inputs are built before the candidate's code is loaded.
setup = {"__name__": "__inputs__"}
exec(compile(cfg["setup"] + "\n__inputs__ = " + cfg["inputs"], "inputs.py", "exec"), setup)
inputs = setup.pop("__inputs__")
del setup
signal.signal(signal.SIGALRM, alarm)
namespace = {"__name__": "__solution__", "__builtins__": __builtins__}
try:
    exec(compile(src, "solution.py", "exec", dont_inherit=True), namespace)
except BaseException as exc:
    error(-1, exc)
fn = namespace.get(cfg["callee"])
if not callable(fn):
    error(-1, NameError(f"the program defines no function {cfg['callee']!r}"))
for i, inp in enumerate(inputs):
    limit = limits[i] if limits else 0
    args = copy.deepcopy(inp)
    start = time.perf_counter()
    try:
        if limit:
            signal.setitimer(signal.ITIMER_REAL, limit)
        out = fn(*args)
        seconds = time.perf_counter() - start
        # Inside the limit: an output that is huge or endless to transfer times out too.
        data = frame_bytes(("out", i, seconds, out if send_values else None))
        if limit:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except InputTimeout:
        send(frame_bytes(("timeout", i, time.perf_counter() - start, limit)))
        raise SystemExit(0)
    except BaseException as exc:
        signal.setitimer(signal.ITIMER_REAL, 0)
        error(i, exc)
    if limit and seconds > limit:  # its own handler swallowed the alarm
        send(frame_bytes(("timeout", i, seconds, limit)))
        raise SystemExit(0)
    send(data)
send(frame_bytes(("done", len(inputs))))
'''

_CHECKER = _TRANSFER_TYPES + r'''
import io, json, pickle, reprlib, struct, traceback
channel = open(cfg["channel"], "rb")
total, callee = cfg["total"], cfg["callee"]
ALLOWED = {("builtins", n) for n in ("set", "frozenset", "complex", "range", "slice", "bytearray", "list", "dict",
                                     "tuple", "int", "float", "str", "bytes", "bool")}
ALLOWED |= {("fractions", "Fraction"), ("decimal", "Decimal"), ("collections", "deque"), ("numpy", "ndarray"),
            ("numpy", "dtype"), ("__main__", "Opaque"), ("__main__", "Iterator"), ("__main__", "View")}
ALLOWED |= {(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")}
ALLOWED |= {(m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")}

class Receiver(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not a plain value")
        return super().find_class(module, name)

def receive():
    head = channel.read(8)
    if len(head) < 8:
        return ("exited",)
    data = channel.read(struct.unpack(">Q", head)[0])
    try:
        frame = Receiver(io.BytesIO(data)).load()
    except BaseException as exc:
        return ("malformed", f"{type(exc).__name__}: {exc}"[:300])
    return frame if isinstance(frame, tuple) and frame else ("malformed", "not a frame")

class CandidateFailed(BaseException):
    """The candidate failed an input: never caught by the harness's own `except Exception`."""

state = {"served": 0, "checked": 0, "pending": False, "failure": None, "args": None, "out": None}
short = reprlib.Repr()
short.maxstring = short.maxother = 80

def stand_in(*args):
    if state["pending"]:  # the harness asked for the next input: the previous one passed its comparison
        state["checked"] += 1
        state["pending"] = False
    frame = receive()
    if frame[0] == "out" and len(frame) == 4 and frame[1] == state["served"]:
        state["served"] += 1
        state["pending"] = True
        state["args"], state["out"] = args, frame[3]
        return frame[3]
    state["failure"] = {"kind": frame[0], "input": state["served"], "frame": [str(x)[:500] for x in frame[1:]]}
    raise CandidateFailed()

namespace = {"__name__": "__tests__", callee: stand_in}
finished = False
try:
    exec(compile(src, "tests.py", "exec", dont_inherit=True), namespace)
    finished = True
except CandidateFailed:
    pass
except BaseException as exc:
    state["pending"] = False
    args = ", ".join(short.repr(a) for a in (state["args"] or ()))
    state["failure"] = {"kind": "wrong" if state["served"] else "tests", "input": max(state["served"] - 1, 0),
                        "exception": type(exc).__name__, "message": " ".join(str(exc).split())[:200],
                        "call": f"{callee}({args})", "returned": short.repr(state["out"])}
if finished:
    state["checked"] += state["pending"]
    end = receive()
    if state["served"] != total:
        state["failure"] = {"kind": "tests", "input": state["served"], "exception": "the tests stopped",
                            "message": f"after {state['served']} of {total} inputs"}
    elif end[:1] != ("done",):
        state["failure"] = {"kind": end[0], "input": total - 1, "frame": [str(x)[:200] for x in end[1:]]}
verdict = {"checked": state["checked"], "total": total, "failure": state["failure"],
           "passed": finished and state["failure"] is None and state["checked"] == total}
sys.stdout.flush()
os.write(1, ("\n" + cfg["mark"] + json.dumps(verdict) + "\n").encode())
'''


# ----------------------------------------------------------------------------------------------------------------
# Running them


@dataclass(frozen=True)
class CodeVerdict:
    """One program checked against its tests."""

    passed: bool
    failure: str | None  # one line, None when it passed
    checked: int | None  # inputs whose output passed its comparison (None: one-program mode)
    total: int | None  # inputs of the harness (None: one-program mode)


def _run_candidate(code: str, harness: Harness, limits: list[float] | None, total_seconds: float,
                   send_values: bool, write_fd: int) -> SandboxRun:
    settings = {"channel": write_fd, "limits_per_input": limits, "send_values": send_values,
                "setup": harness.setup, "inputs": harness.inputs, "callee": harness.callee}
    return SandboxRun(_CANDIDATE, code, timeout=total_seconds, settings=settings, pass_fds=(write_fd,))


class _PlainFrames(pickle.Unpickler):
    """A timing run's frames hold only numbers, strings and None: no class is ever loaded in this process."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"{module}.{name} in a timing frame")


def _frames(fd: int):
    """The frames of a timing run, read in this process (malformed ones end the reading)."""
    with os.fdopen(fd, "rb") as channel:
        while len(head := channel.read(8)) == 8:
            try:
                yield _PlainFrames(io.BytesIO(channel.read(struct.unpack(">Q", head)[0]))).load()
            except Exception:
                return


_times: dict[str, list[float | None]] = {}
_times_lock = threading.Lock()
_key_locks: dict[str, threading.Lock] = {}


def reference_times(solution: str, tests: str, harness: Harness) -> list[float | None]:
    """Seconds the reference solution takes on each input (None where it failed or never got to it), measured
    once per item and process in the sandbox, as EvalPlus measures its ground truth on the evaluating machine."""
    key = hashlib.sha256((solution + "\0" + tests).encode()).hexdigest()
    with _times_lock:
        lock = _key_locks.setdefault(key, threading.Lock())
    with lock:
        if key not in _times:
            read_fd, write_fd = os.pipe()
            try:
                run = _run_candidate(solution, harness, None, REFERENCE_RUN_SECONDS, False, write_fd)
            finally:
                os.close(write_fd)
            times: list[float | None] = [None] * harness.total
            for frame in _frames(read_fd):
                if frame[0] == "out":
                    times[frame[1]] = frame[2]
            run.wait()
            _times[key] = times
        return _times[key]


def input_limits(item: dict, harness: Harness) -> tuple[list[float], float]:
    """(per-input limits, the whole run's limit) for a candidate on `item` (see the module's docstring)."""
    reference = reference_times(item["solution"], item["gold"], harness) if item.get("solution") else []
    times = [t for t in reference if t is not None]
    limits = [max(MIN_LIMIT, LIMIT_FACTOR * t) if t is not None else MIN_LIMIT
              for t in reference or [None] * harness.total]
    return limits, min(sum(limits), max(TOTAL_FLOOR, LIMIT_FACTOR * sum(times))) + START_SECONDS


def check_code(code: str, item: dict) -> CodeVerdict:
    """Check candidate `code` against the tests of a code item (item["gold"]); see the module's docstring."""
    harness = parse_harness(item["gold"])
    if harness is None:
        program = code + "\n" + item["gold"]
        result = run_sandboxed(program, timeout=item.get("timeout", DEFAULT_PROGRAM_TIMEOUT))
        return CodeVerdict(result.ok, failure_reason(result, program, len(code.splitlines())), None, None)
    limits, whole = input_limits(item, harness)
    mark = secrets.token_hex(16)  # the verdict's line: unknown to the candidate, so no output can fake it
    read_fd, write_fd = os.pipe()
    try:
        candidate = _run_candidate(code, harness, limits, whole, True, write_fd)
        try:
            checker = SandboxRun(_CHECKER, item["gold"], timeout=2 * whole + 30, pass_fds=(read_fd,),
                                 settings={"channel": read_fd, "total": harness.total, "callee": harness.callee,
                                           "mark": mark})
        except BaseException:
            candidate.wait()
            raise
    finally:
        os.close(read_fd)
        os.close(write_fd)
    ran = candidate.wait()
    checked = checker.wait()
    return _verdict(checked, mark, ran, code, harness, whole)


def _verdict(checker: SandboxResult, mark: str, candidate: SandboxResult, code: str, harness: Harness,
             whole: float) -> CodeVerdict:
    at = checker.output.rfind(mark)
    if at < 0:
        why = " ".join((checker.error or "no verdict").split())
        return CodeVerdict(False, f"the checker failed: {why}"[:FAILURE_CHARS], 0, harness.total)
    verdict = json.loads(checker.output[at + len(mark):].splitlines()[0])
    failure = None if verdict["passed"] else _failure_line(verdict["failure"] or {}, candidate, code, harness, whole)
    return CodeVerdict(verdict["passed"], failure, verdict["checked"], verdict["total"])


def _failure_line(failure: dict, candidate: SandboxResult, code: str, harness: Harness, whole: float) -> str:
    """Why a candidate failed, in one line: the exception and its line in the candidate, the wrong output, the
    input that ran over its limit, or how the candidate's process ended."""
    kind, frame, i = failure.get("kind"), failure.get("frame", []), failure.get("input", 0)
    of = f"input {i + 1} of {harness.total}"
    if kind == "error":
        index, exception, message, line = int(frame[0]), frame[1], frame[2], frame[3]
        text = f"{exception}: {message}" if message else exception
        if line not in (None, "None"):
            lines = code.splitlines()
            n = int(line)
            source = lines[n - 1].strip() if 0 < n <= len(lines) else ""
            text += f" at line {n} of the candidate" + (f": {source}" if source else "")
        reason = text + (" (while loading the program)" if index < 0 else f" ({of})")
    elif kind == "timeout":
        reason = f"TimeoutError: {of} ran over its time limit of {float(frame[2]):.1f} s"
    elif kind in ("wrong", "tests"):
        detail = f"{failure['exception']}: {failure['message']}" if failure.get("message") else failure["exception"]
        reason = (f"wrong output on {of}: {failure['call']} returned {failure['returned']} ({detail})"
                  if kind == "wrong" else f"the tests failed at {of}: {detail}")
    elif kind == "exited" and candidate.timed_out:
        reason = f"TimeoutError: the run exceeded its time limit of {whole:.0f} s at {of}"
    elif kind == "exited" and candidate.returncode is not None and candidate.returncode < 0:
        reason = f"{(candidate.error or '').splitlines()[0]} at {of}"
    elif kind == "exited":
        reason = f"the program exited before its tests finished (sys.exit / os._exit?) at {of}"
    else:
        reason = f"the candidate's process sent malformed results at {of}: {' '.join(frame)}"
    return " ".join(reason.split())[:FAILURE_CHARS]
