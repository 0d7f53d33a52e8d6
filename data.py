"""The benchmarks: one registry entry per task (source, question format, gold, answer kind, token budget).

Items are dicts with at least `id`, `question` (the text shown to the model, without the answer instruction,
which prompts.py adds from the task's answer kind), `solution` and `gold`. Choice tasks add `choices`
({letter: text}); code tasks add `entry_point`, their gold is the benchmark's test code and their `solution` the
reference solution, whose time per test input sets the candidate's limits (code_check.py).

Sources. By default the Hugging Face Hub datasets the reference uses (`datasets` is imported only then).
Offline, from a local folder given by `data_dir` (run.py's --data_dir) or the LATENTMAS_DATA_DIR environment
variable, laid out like ../shared/data:

    gsm8k/test.jsonl                              aime_2024/test.jsonl
    aime_2025/aime_2025.jsonl                     gpqa_diamond/gpqa_diamond.csv
    arc_easy/ARC-Easy-test.jsonl                  arc_challenge/ARC-Challenge-test.jsonl
    mbppplus/MbppPlus-OriginFmt.jsonl             humanevalplus/HumanEvalPlus-OriginFmt.jsonl
    medqa/medqa.json                              winogrande/dev.jsonl (not in ../shared/data)

Differences from the reference loaders, on purpose:
- GSM8K golds keep their thousands separators whole ("#### 2,125" -> "2125"; the reference read "2").
- Choice letters are upper case and listed as "A. text" for every choice task (the reference listed ARC as
  "a: text" and Winogrande as "1: text"); golds are upper-case letters; Winogrande's options are A and B.
- GPQA-Diamond is built from the original CSV with a seeded option order (the paper's order, from
  fingertap/GPQA-Diamond, cannot be reproduced offline); the Hub default still reads fingertap/GPQA-Diamond.
- MBPP+ golds put the row's `test_imports` before its tests (10 rows need `import math`).
- HumanEval/32 (find_zero) fails with its own canonical solution: its upstream OriginFmt test calls
  `_poly(*candidate(*inp), inp)`, a TypeError for any float result. Every method scores 0 on it; it is kept.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator

from errors import DataError
from utils import SCORERS, Score, extract_gold, format_number, parse_number, read_output, score_choice

DATA_DIR_ENV = "LATENTMAS_DATA_DIR"
# Seeds the A-D order of GPQA options built from the CSV (recorded with every item). 8 is the seed in 0-9 whose
# golds are most even (A/B/C/D = 50/52/48/48); seed 0 gives 33/39/56/70, a letter bias models could exploit.
GPQA_SEED = 8


@dataclass(frozen=True)
class Task:
    name: str  # registry key, e.g. "gsm8k"
    answer_kind: str  # "number" | "integer" | "choice" | "code"
    max_new_tokens: int  # the paper's output budget
    local_file: str  # relative to the data dir
    make_item: Callable[[dict, int], dict]  # one raw row (and its index) -> item; KeyError/ValueError = bad row
    expects: str  # what a row must hold, for error messages
    hub_id: str | None = None  # None: no Hub copy (MedQA ships with the reference repository)
    hub_config: str | None = None
    hub_split: str = "test"  # the split the paper evaluates on
    choices: tuple[str, ...] = ()  # valid letters of choice tasks (items may carry fewer, e.g. 3-option ARC)

    def score(self, output_text: str, item: dict, prompt: str = "", cut_at_budget: bool = False,
              whole_text: bool = False) -> Score:
        """The full Score of one model output (prediction, correct, extraction rule, code failure reason): the
        answer kind's scorer (utils.SCORERS) over what of the output is read (utils.read_output).
        prompt: the rendered prompt the output continues; cut_at_budget: decoding stopped at max_new_tokens, not at
        EOS; whole_text: the reference's rule (--score_whole_text)."""
        reading = read_output(output_text, prompt, cut_at_budget, whole_text)
        if self.answer_kind == "choice" and not item.get("choices"):
            return score_choice(reading, item, letters="".join(self.choices) or "ABCD")
        return SCORERS[self.answer_kind](reading, item)

    def score_batch(self, output_texts: list[str], items: list[dict], prompts: list[str] | None = None,
                    cut_at_budget: list[bool] | None = None, whole_text: bool = False,
                    workers: int = 2) -> list[Score]:
        """score() over a batch (prompts and cut_at_budget per output, or none); code candidates run in parallel
        sandboxes, results in input order."""
        if len(output_texts) != len(items):
            raise ValueError(f"{len(output_texts)} outputs for {len(items)} items")
        rows = list(zip(output_texts, items, prompts or [""] * len(items), cut_at_budget or [False] * len(items)))
        score = lambda row: self.score(*row, whole_text=whole_text)
        if self.answer_kind != "code" or workers <= 1:
            return [score(row) for row in rows]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(score, rows))

    def load(self, split: str = "test", data_dir: str | None = None, max_samples: int | None = None,
             cache_dir: str | None = None) -> list[dict]:
        """All items (the first `max_samples` if given), from the local data dir or the Hub.

        `split="test"` means the split the paper evaluates on (train for the AIME sets, validation for
        Winogrande). Local folders hold only that split.
        """
        root = resolve_data_dir(data_dir)
        eval_split = split in (None, "test", self.hub_split)
        if root is not None and not eval_split:
            raise DataError(f"{os.path.join(root, self.local_file)}: local data holds only the evaluation split "
                            f"of '{self.name}', not '{split}'")
        rows = _local_rows(self, root) if root is not None else _hub_rows(self, self.hub_split if eval_split else split,
                                                                           cache_dir)
        items = []
        for i, (where, row) in enumerate(rows):
            if max_samples is not None and i >= max_samples:
                break
            try:
                item = self.make_item(row, i)
            except KeyError as e:
                raise DataError(f"{where}: missing field {e}; expected {self.expects}") from None
            except (ValueError, TypeError, AttributeError) as e:
                raise DataError(f"{where}: {e}; expected {self.expects}") from None
            if not str(item.get("gold", "")).strip():
                raise DataError(f"{where}: empty gold answer; expected {self.expects}")
            items.append(item)
        if not items and max_samples != 0:
            source = os.path.join(root, self.local_file) if root is not None else self.hub_id
            raise DataError(f"{source}: no items; expected {self.expects}")
        return items


# ----------------------------------------------------------------------------------------------------------------
# Question formats and golds, one function per benchmark (raw row -> item).


def _choice_question(stem: str, options: dict[str, str], sep: str = "\n") -> str:
    return stem.strip() + sep + "\n".join(f"{letter}. {text}" for letter, text in options.items())


def _gsm8k(row: dict, i: int) -> dict:
    gold = extract_gold(row["answer"])
    if gold is None:
        raise ValueError("answer has no '#### <number>' line")
    return {"id": f"gsm8k/{i}", "question": row["question"].strip(), "solution": row["answer"], "gold": gold}


def _aime(prefix: str) -> Callable[[dict, int], dict]:
    def make(row: dict, i: int) -> dict:
        value = parse_number(str(row["answer"]))
        if value is None or value.denominator != 1:
            raise ValueError(f"answer {row['answer']!r} is not an integer")
        return {
            "id": f"{prefix}/{row.get('id', i)}",
            "question": row["problem"].strip(),
            "solution": str(row.get("solution") or row["answer"]),
            "gold": format_number(value),  # "025" -> "25"
        }

    return make


def _gpqa(row: dict, i: int) -> dict:
    if "Question" not in row:  # Hub (fingertap/GPQA-Diamond): already formatted, gold = letter
        options = dict(re.findall(r"^([A-D])\. (.*)$", row["question"], re.MULTILINE))
        gold = row["answer"].strip().upper()
        return {"id": f"gpqa/{i}", "question": row["question"].strip(), "solution": gold, "gold": gold,
                "choices": options}
    texts = [row["Correct Answer"]] + [row[f"Incorrect Answer {k}"] for k in (1, 2, 3)]
    texts = [t.strip() for t in texts]
    record = row.get("Record ID") or str(i)
    order = list(range(4))
    random.Random(f"gpqa-{GPQA_SEED}-{record}").shuffle(order)  # per-item seed: independent of file order
    options = {letter: texts[k] for letter, k in zip("ABCD", order)}
    gold = "ABCD"[order.index(0)]
    return {
        "id": f"gpqa/{record}",
        "question": _choice_question(row["Question"], options, sep="\n\n"),  # fingertap's layout
        "solution": row.get("Explanation") or texts[0],
        "gold": gold,
        "choices": options,
        "shuffle_seed": GPQA_SEED,
    }


def _arc(row: dict, i: int) -> dict:
    digit = {"1": "A", "2": "B", "3": "C", "4": "D", "5": "E"}  # 22+97 rows use numeric labels

    def letter(label: str) -> str:
        label = str(label).strip()
        return digit.get(label, label.upper())

    labels, texts = row["choices"]["label"], row["choices"]["text"]
    options = {letter(lab): str(text).strip() for lab, text in zip(labels, texts)}
    gold = letter(row["answerKey"])
    if gold not in options:
        raise ValueError(f"answerKey {row['answerKey']!r} is not among the labels {labels}")
    return {"id": row.get("id") or f"arc/{i}", "question": _choice_question(row["question"], options),
            "solution": gold, "gold": gold, "choices": options}


def _medqa(row: dict, i: int) -> dict:
    options = {}
    for op in row["options"]:
        m = re.match(r"\s*([A-Z])\.\s*(.*)", op, re.DOTALL)
        options[m.group(1) if m else "ABCDEFGH"[len(options)]] = (m.group(2) if m else op).strip()
    answer = str(row["answer"])
    # The reference's rule: the first option whose text contains the answer.
    gold = next((letter for letter, op in zip(options, row["options"]) if answer in op), None)
    if gold is None:
        raise ValueError(f"answer {answer!r} is in none of the options")
    # The file's own `idx`/`pid` repeat (200 distinct in 300 rows), so the id is the row's position.
    return {"id": f"medqa/{i}", "question": row["query"].strip(), "solution": answer,
            "gold": gold, "choices": options}


def _winogrande(row: dict, i: int) -> dict:
    options = {"A": str(row["option1"]).strip(), "B": str(row["option2"]).strip()}
    answer = str(row["answer"]).strip()
    if answer not in ("1", "2"):
        raise ValueError(f"answer {answer!r} is not 1 or 2")
    stem = "Pickout proper choice that fits the _ in the following sentence:\n" + row["sentence"].strip()
    gold = "AB"[int(answer) - 1]
    return {"id": row.get("qID") or f"winogrande/{i}", "question": _choice_question(stem, options),
            "solution": answer, "gold": gold, "choices": options}


def mbpp_entry_point(code: str, first_test: str) -> str | None:
    """The function the MBPP tests call: a function defined in the solution and called in the first assert."""
    defined = re.findall(r"^def\s+(\w+)\s*\(", code, re.MULTILINE)
    called = [name for name in defined if re.search(rf"\b{re.escape(name)}\s*\(", first_test)]
    return called[0] if called else (defined[-1] if defined else None)


def _mbppplus(row: dict, i: int) -> dict:
    tests = row["test_list"]
    if len(tests) < 3:
        raise ValueError("test_list has fewer than 3 asserts")
    question = f"{row['prompt']}\nYour answer will be tested on test cases like:\n{tests[0]}\n{tests[1]}\n{tests[2]}\n"
    imports = "\n".join(row.get("test_imports") or [])
    return {
        "id": f"Mbpp/{row['task_id']}",
        "question": question,
        "solution": row["code"],
        "gold": (imports + "\n" if imports else "") + row["test"],
        "entry_point": mbpp_entry_point(row["code"], tests[0]),
    }


def _humanevalplus(row: dict, i: int) -> dict:
    entry = row["entry_point"]
    return {
        "id": row["task_id"],
        "question": row["prompt"],
        "solution": row["prompt"] + row["canonical_solution"],
        # The reference's harness, kept so scores compare: rename the check's parameter, then call it.
        "gold": row["test"].replace("candidate", entry) + f"\n\ncheck({entry})",
        "entry_point": entry,
    }


# ----------------------------------------------------------------------------------------------------------------
# The registry


def _choice_task(name: str, budget: int, local_file: str, make, expects: str, letters: str = "ABCD", **hub) -> Task:
    return Task(name, "choice", budget, local_file, make, expects, choices=tuple(letters), **hub)


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("gsm8k", "number", 2048, "gsm8k/test.jsonl", _gsm8k,
             "JSON lines with 'question' and 'answer' ending in '#### <number>'",
             hub_id="openai/gsm8k", hub_config="main"),
        Task("aime2024", "integer", 20000, "aime_2024/test.jsonl", _aime("aime2024"),
             "JSON lines with 'problem' and an integer 'answer'",
             hub_id="HuggingFaceH4/aime_2024", hub_split="train"),
        Task("aime2025", "integer", 20000, "aime_2025/aime_2025.jsonl", _aime("aime2025"),
             "JSON lines with 'problem' and an integer 'answer'",
             hub_id="yentinglin/aime_2025", hub_split="train"),
        _choice_task("gpqa", 8192, "gpqa_diamond/gpqa_diamond.csv", _gpqa,
                     "the GPQA CSV with 'Question', 'Correct Answer', 'Incorrect Answer 1'..'3'",
                     hub_id="fingertap/GPQA-Diamond"),
        _choice_task("arc_easy", 2048, "arc_easy/ARC-Easy-test.jsonl", _arc,
                     "JSON lines with 'question', 'choices' {'text','label'} and 'answerKey'", letters="ABCDE",
                     hub_id="allenai/ai2_arc", hub_config="ARC-Easy"),
        _choice_task("arc_challenge", 2048, "arc_challenge/ARC-Challenge-test.jsonl", _arc,
                     "JSON lines with 'question', 'choices' {'text','label'} and 'answerKey'", letters="ABCDE",
                     hub_id="allenai/ai2_arc", hub_config="ARC-Challenge"),
        Task("mbppplus", "code", 4096, "mbppplus/MbppPlus-OriginFmt.jsonl", _mbppplus,
             "JSON lines with 'task_id', 'prompt', 'code', 'test_list' (3+ asserts) and 'test'",
             hub_id="evalplus/mbppplus"),
        Task("humanevalplus", "code", 4096, "humanevalplus/HumanEvalPlus-OriginFmt.jsonl", _humanevalplus,
             "JSON lines with 'task_id', 'prompt', 'canonical_solution', 'entry_point' and 'test'",
             hub_id="evalplus/humanevalplus"),
        _choice_task("medqa", 4096, "medqa/medqa.json", _medqa,
                     "a JSON array of objects with 'query', 'options' and 'answer'"),
        _choice_task("winogrande", 2048, "winogrande/dev.jsonl", _winogrande,
                     "JSON lines with 'sentence', 'option1', 'option2' and 'answer' (1 or 2)", letters="AB",
                     hub_id="allenai/winogrande", hub_config="winogrande_debiased", hub_split="validation"),
    ]
}


def get_task(name: str) -> Task:
    """The registry entry of a task; DataError for unknown names."""
    if name not in TASKS:
        raise DataError(f"unknown task '{name}'; choose one of: {', '.join(TASKS)}")
    return TASKS[name]


def resolve_data_dir(data_dir: str | None) -> str | None:
    """The local data folder: the argument, else $LATENTMAS_DATA_DIR, else None (= the Hugging Face Hub)."""
    return data_dir or os.environ.get(DATA_DIR_ENV) or None


# ----------------------------------------------------------------------------------------------------------------
# Raw rows, each with where it came from ("path:line") for error messages.


def json_error_text(error: json.JSONDecodeError) -> str:
    """'invalid JSON: expecting value at column 7'. Some of json's messages end in "at" and take the position
    after them ("Unterminated string starting at": the column of the opening quote); "{msg} at column" doubled
    their "at"."""
    what = error.msg[:1].lower() + error.msg[1:]
    return f"invalid JSON: {what}{'' if what.endswith(' at') else ' at'} column {error.colno}"


def _read_jsonl(path: str) -> Iterator[tuple[str, dict]]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                # Without its line break: json would report an unclosed string as an "invalid control character"
                # at the newline, a column past the end of the line.
                row = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: {json_error_text(e)}; expected one JSON object per line") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            yield f"{path}:{lineno}", row


def _read_json_array(path: str) -> Iterator[tuple[str, dict]]:
    with open(path, encoding="utf-8") as f:
        try:
            rows = json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: {json_error_text(e)}; expected a JSON array of objects") from None
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON array of objects, got a {type(rows).__name__}")
    for k, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{path}: element {k}: expected a JSON object, got {type(row).__name__}")
        yield f"{path}: element {k}", row


def _read_csv(path: str) -> Iterator[tuple[str, dict]]:
    with open(path, encoding="utf-8", newline="") as f:  # fields hold newlines: a real CSV parser is needed
        reader = csv.DictReader(f)
        for row in reader:
            yield f"{path}:{reader.line_num}", row


_READERS = {".jsonl": _read_jsonl, ".json": _read_json_array, ".csv": _read_csv}


def _local_rows(task: Task, root: str) -> Iterator[tuple[str, dict]]:
    if not os.path.isdir(root):
        raise DataError(f"{root}: data directory not found (from --data_dir or ${DATA_DIR_ENV}); "
                        f"expected the layout of ../shared/data")
    path = os.path.join(root, task.local_file)
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found; expected {task.expects} for task '{task.name}'")
    reader = _READERS[os.path.splitext(path)[1]]
    try:
        yield from reader(path)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason}); expected {task.expects}") from None
    except csv.Error as e:
        raise DataError(f"{path}: malformed CSV ({e}); expected {task.expects}") from None


def _hub_rows(task: Task, split: str, cache_dir: str | None) -> Iterator[tuple[str, dict]]:
    if task.hub_id is None:
        raise DataError(f"task '{task.name}' has no Hugging Face Hub copy; pass --data_dir or set "
                        f"${DATA_DIR_ENV} to a folder holding {task.local_file}")
    try:
        from datasets import load_dataset  # only needed for the Hub
    except ImportError:
        raise DataError(f"loading '{task.name}' from the Hub needs the `datasets` package; install it, or pass "
                        f"--data_dir / set ${DATA_DIR_ENV} (expects {task.local_file})") from None
    try:
        ds = load_dataset(task.hub_id, task.hub_config, split=split, cache_dir=cache_dir)
    except Exception as e:  # offline, gated, renamed: one line, and how to work offline
        first = (str(e).splitlines() or [""])[0][:200]
        raise DataError(f"could not load {task.hub_id} ({split}) from the Hugging Face Hub: {type(e).__name__}: "
                        f"{first}; for local files pass --data_dir or set ${DATA_DIR_ENV}") from None
    for k, row in enumerate(ds):
        yield f"{task.hub_id}[{split}] row {k}", dict(row)


# ----------------------------------------------------------------------------------------------------------------
# Loading


def load_task(name: str, split: str = "test", data_dir: str | None = None, max_samples: int | None = None,
              cache_dir: str | None = None) -> list[dict]:
    """get_task(name).load(...): see Task.load."""
    return get_task(name).load(split, data_dir, max_samples, cache_dir)


# ----------------------------------------------------------------------------------------------------------------
# Scoring by task name (scripts and tests that hold a name; the runner holds the Task and calls task.score_batch).


def score_output(task: str, output_text: str, item: dict, prompt: str = "", cut_at_budget: bool = False,
                 whole_text: bool = False) -> Score:
    """get_task(task).score(...): see Task.score."""
    return get_task(task).score(output_text, item, prompt, cut_at_budget, whole_text)
