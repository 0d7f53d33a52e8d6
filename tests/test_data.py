"""Loaders against the shared offline data: counts, golds, formats, and one-line errors for bad files."""

import json
import re

import pytest

import code_check
import data
from data import DataError, get_task, load_task

# The paper's item counts.
COUNTS = {
    "gsm8k": 1319,
    "aime2024": 30,
    "aime2025": 30,
    "gpqa": 198,
    "arc_easy": 2376,
    "arc_challenge": 1172,
    "mbppplus": 378,
    "humanevalplus": 164,
    "medqa": 300,
}


@pytest.fixture(scope="module")
def loaded(data_dir):
    return {name: load_task(name, data_dir=str(data_dir)) for name in COUNTS}


def test_registry():
    assert set(data.TASKS) == set(COUNTS) | {"winogrande"}
    budgets = {"gsm8k": 2048, "arc_easy": 2048, "arc_challenge": 2048, "medqa": 4096, "mbppplus": 4096,
               "humanevalplus": 4096, "gpqa": 8192, "aime2024": 20000, "aime2025": 20000, "winogrande": 2048}
    kinds = {"gsm8k": "number", "aime2024": "integer", "aime2025": "integer", "mbppplus": "code",
             "humanevalplus": "code"}
    for name, task in data.TASKS.items():
        assert task.max_new_tokens == budgets[name]
        assert task.answer_kind == kinds.get(name, "choice")
        assert callable(task.score) and callable(task.load)
    with pytest.raises(DataError, match=r"unknown task 'nope'; choose one of: gsm8k, "):
        get_task("nope")


@pytest.mark.parametrize("name", list(COUNTS))
def test_counts_and_golds(loaded, name):
    items = loaded[name]
    assert len(items) == COUNTS[name]
    assert all(str(it["gold"]).strip() for it in items)
    assert all(it["question"].strip() and "solution" in it for it in items)
    ids = [it["id"] for it in items]
    assert len(set(ids)) == len(ids)
    task = get_task(name)
    if task.answer_kind == "choice":
        for it in items:
            assert it["gold"] in it["choices"] and set(it["choices"]) <= set(task.choices)
            for letter, text in it["choices"].items():
                assert f"{letter}. {text}" in it["question"]
    if task.answer_kind == "integer":
        assert all(re.fullmatch(r"\d+", it["gold"]) for it in items)


def test_gsm8k_thousands_separators(loaded):
    items = loaded["gsm8k"]
    with_commas = [it for it in items if "," in it["solution"].split("####")[-1]]
    assert len(with_commas) == 14
    golds = {it["gold"] for it in with_commas}
    assert {"2125", "1450000"} <= golds
    assert all(re.fullmatch(r"-?\d+(\.\d+)?", it["gold"]) for it in items)


def test_question_formats(loaded):
    arc = loaded["arc_easy"][0]
    assert arc["id"] == "Mercury_417466" and arc["gold"] == "A"
    assert arc["question"].startswith("Which statement best explains why photosynthesis")
    assert "\nA. Sunlight is the source of energy" in arc["question"]
    assert loaded["arc_challenge"][0]["gold"] == "C"  # Mercury_7175875, the well-known first item
    numeric = [it for it in loaded["arc_easy"] if "1. " in it["question"] and "A. " in it["question"]]
    assert numeric, "rows with labels 1-4 are listed as A-D"

    medqa = loaded["medqa"][0]
    assert medqa["gold"] == "C" and medqa["question"].endswith("Choose the correct option.")

    mbpp = loaded["mbppplus"][0]
    assert mbpp["id"] == "Mbpp/2" and mbpp["entry_point"] == "similar_elements"
    assert "Your answer will be tested on test cases like:\nassert set(similar_elements(" in mbpp["question"]
    assert "```" not in mbpp["question"]  # the answer instruction is prompts.py's job

    he = loaded["humanevalplus"][0]
    assert he["id"] == "HumanEval/0" and he["question"].startswith("from typing import List")
    assert he["gold"].rstrip().endswith("check(has_close_elements)") and "candidate" not in he["gold"]

    assert loaded["aime2024"][7]["gold"] == "25"  # "025"

    # Code items: EvalPlus harnesses (checked out of the candidate's reach, code_check.py) and the reference
    # solution whose time per input sets a candidate's limits.
    code_items = loaded["mbppplus"] + loaded["humanevalplus"]
    harnesses = [code_check.parse_harness(it["gold"]) for it in code_items]
    assert all(h is not None and h.callee == it["entry_point"] and h.total > 0 and it["solution"]
               for h, it in zip(harnesses, code_items))


def test_gpqa_seeded_shuffle(loaded, data_dir):
    items = loaded["gpqa"]
    counts = {letter: sum(it["gold"] == letter for it in items) for letter in "ABCD"}
    assert min(counts.values()) >= 40, counts  # no letter bias
    again = load_task("gpqa", data_dir=str(data_dir))
    assert [it["gold"] for it in again] == [it["gold"] for it in items]  # deterministic
    for it in items[:20]:
        assert re.search(r"\n\nA\. .*\nB\. .*\nC\. .*\nD\. ", it["question"], re.DOTALL)


def test_mbpp_entry_points_match_evalplus(loaded, data_dir):
    native = data_dir / "mbppplus" / "MbppPlus.jsonl"
    if not native.exists():
        pytest.skip("no native MBPP+ file")
    entry = {}
    with open(native) as f:
        for line in f:
            row = json.loads(line)
            entry[row["task_id"]] = row["entry_point"]
    assert {it["id"]: it["entry_point"] for it in loaded["mbppplus"]} == entry


def test_max_samples_and_env(data_dir, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(data_dir))
    assert data.resolve_data_dir(None) == str(data_dir)
    assert data.resolve_data_dir("/x") == "/x"
    assert len(load_task("gsm8k", max_samples=5)) == 5
    monkeypatch.delenv(data.DATA_DIR_ENV)
    assert data.resolve_data_dir(None) is None


# ---- one clear line for missing or malformed files


def _one_line(err: DataError) -> str:
    msg = str(err)
    assert "\n" not in msg
    return msg


def test_missing_dir_and_file(tmp_path):
    with pytest.raises(DataError) as e:
        load_task("gsm8k", data_dir=str(tmp_path / "nowhere"))
    assert "data directory not found" in _one_line(e.value)
    with pytest.raises(DataError) as e:
        load_task("gsm8k", data_dir=str(tmp_path))
    msg = _one_line(e.value)
    assert str(tmp_path / "gsm8k" / "test.jsonl") in msg and "file not found" in msg and "'question'" in msg


def _write(root, rel, text):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_bad_json_line_number(tmp_path):
    good = json.dumps({"question": "q", "answer": "x\n#### 3"})
    path = _write(tmp_path, "gsm8k/test.jsonl", f"{good}\n{good}\n{{not json\n")
    with pytest.raises(DataError) as e:
        load_task("gsm8k", data_dir=str(tmp_path))
    msg = _one_line(e.value)
    assert msg.startswith(f"{path}:3: invalid JSON") and "one JSON object per line" in msg


def test_bad_json_message_names_the_column_once(tmp_path):
    good = json.dumps({"question": "q", "answer": "x\n#### 3"})
    path = _write(tmp_path, "gsm8k/test.jsonl", f'{good}\n{{"question": "unclosed\n')
    with pytest.raises(DataError) as e:
        load_task("gsm8k", data_dir=str(tmp_path))
    assert _one_line(e.value).startswith(f"{path}:2: invalid JSON: unterminated string starting at column 14;")
    (tmp_path / "gsm8k/test.jsonl").write_text('{"question": }\n')
    with pytest.raises(DataError, match=r"test.jsonl:1: invalid JSON: expecting value at column 14;"):
        load_task("gsm8k", data_dir=str(tmp_path))


def test_bad_json_array_line_number(tmp_path):
    path = _write(tmp_path, "medqa/medqa.json", '[\n  {"query": "q",\n  "options": [}\n]')
    with pytest.raises(DataError) as e:
        load_task("medqa", data_dir=str(tmp_path))
    assert _one_line(e.value).startswith(f"{path}:3: invalid JSON")


def test_missing_field_and_bad_gold(tmp_path):
    path = _write(tmp_path, "gsm8k/test.jsonl", json.dumps({"question": "q"}) + "\n")
    with pytest.raises(DataError) as e:
        load_task("gsm8k", data_dir=str(tmp_path))
    assert _one_line(e.value).startswith(f"{path}:1: missing field 'answer'")
    _write(tmp_path, "gsm8k/test.jsonl", json.dumps({"question": "q", "answer": "no marker"}) + "\n")
    with pytest.raises(DataError, match=r"test.jsonl:1: answer has no '#### <number>' line"):
        load_task("gsm8k", data_dir=str(tmp_path))
    _write(tmp_path, "aime_2024/test.jsonl", json.dumps({"problem": "p", "answer": "1/2"}) + "\n")
    with pytest.raises(DataError, match=r"test.jsonl:1: answer '1/2' is not an integer"):
        load_task("aime2024", data_dir=str(tmp_path))


def test_bad_csv_columns(tmp_path):
    path = _write(tmp_path, "gpqa_diamond/gpqa_diamond.csv", "Question,Correct Answer\nq,a\n")
    with pytest.raises(DataError) as e:
        load_task("gpqa", data_dir=str(tmp_path))
    msg = _one_line(e.value)
    assert msg.startswith(f"{path}:2: missing field 'Incorrect Answer 1'")


def test_no_hub_copy_for_medqa(monkeypatch):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    with pytest.raises(DataError, match="no Hugging Face Hub copy"):
        load_task("medqa")


def test_winogrande_local_format(tmp_path):
    row = {"qID": "w1", "sentence": "The trophy didn't fit in the suitcase because _ was too big.",
           "option1": "the trophy", "option2": "the suitcase", "answer": "1"}
    _write(tmp_path, "winogrande/dev.jsonl", json.dumps(row) + "\n")
    (item,) = load_task("winogrande", data_dir=str(tmp_path))
    assert item["gold"] == "A" and item["question"].endswith("\nA. the trophy\nB. the suitcase")


def test_hub_failure_is_one_line(monkeypatch):
    # Here the Hub is unreachable (or `datasets` is not installed): either way one line that points offline.
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError) as e:
        load_task("gsm8k", max_samples=1)
    assert "--data_dir" in _one_line(e.value)


def test_local_data_has_only_the_eval_split(data_dir):
    with pytest.raises(DataError, match="only the evaluation split"):
        load_task("gsm8k", split="train", data_dir=str(data_dir))
    assert len(load_task("aime2024", split="train", data_dir=str(data_dir))) == 30  # the reference's split name
