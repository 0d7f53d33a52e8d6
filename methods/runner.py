"""The one batch loop every method runs through: batches, scoring, the per-item trace, predictions.jsonl."""

from __future__ import annotations

import ast
import json
from collections import Counter
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from code_check import parse_harness
from data import Task
from results import append_records
from utils import Score, read_output

from .base import ItemOutput, Method, kv_per_item


def item_record(method: str, index: int, item: dict, out: ItemOutput, score: Score, whole_text: bool = False) -> dict:
    """One line of predictions.jsonl: the prediction, its extraction rule (utils.Extraction) and what was read
    (utils.read_output: the thinking and the answer text apart, whether decoding was cut at the token budget);
    code tasks add why the program did not pass and how many test inputs passed (code_check.py)."""
    reading = read_output(out.final_text, out.final_prompt, out.cut_at_budget, whole_text)
    record = {
        "method": method,
        "index": index,
        "id": item.get("id", str(index)),
        "question": item["question"],
        "gold": item["gold"],
        "prediction": score.prediction,
        "correct": bool(score.correct),
        "extraction_rule": score.rule,
        "cut_at_budget": out.cut_at_budget,
        "output_tokens": out.output_tokens,
        "judger_output_tokens": out.judger_output_tokens,
        "latent_steps": sum(a.latent_steps for a in out.agents),
        "seconds": round(sum(a.seconds for a in out.agents), 4),
        "final_text": out.final_text,
        # The final text apart: its thinking (None: it does not think) and the text the answer was read from
        # (None: the thinking never closed).
        "thinking": reading.thinking,
        "answer_text": reading.answer_text,
        # latent_tokens appears only with --decode_latents, so files are unchanged without it.
        "agents": [{k: v for k, v in vars(a).items() if not (k == "latent_tokens" and v is None)} for a in out.agents],
    }
    if "entry_point" in item:  # code tasks: the trace names the function instead of the test harness
        record["entry_point"] = item["entry_point"]
        record["failure"] = score.failure
        record["tests_checked"], record["tests_total"] = score.tests_checked, score.tests_total
    return record


def count_tests(test_code: str) -> int | None:
    """Test cases in a code item's gold: the length of its `inputs = [...]` list (EvalPlus harnesses), else its
    assert statements; None when the code does not parse."""
    harness = parse_harness(test_code)
    if harness is not None:
        return harness.total
    try:
        tree = ast.parse(test_code)
    except SyntaxError:
        return None
    return sum(isinstance(node, ast.Assert) for node in ast.walk(tree))


def short_gold(record: dict) -> str:
    """The gold as the trace shows it: code tasks' hidden test harness (often thousands of lines) becomes the
    function it tests and how many cases it runs."""
    if "entry_point" not in record:
        return str(record["gold"])
    tests = count_tests(record["gold"])
    name = f"{record['entry_point']}()" if record["entry_point"] else "the program"
    return f"tests of {name} ({'?' if tests is None else tests} cases)"


def latent_tokens_line(steps: list[dict]) -> str:
    """One readable line for an agent's decoded latent steps: the LM head's top tokens, then (after "~") the
    input embeddings nearest to the vector that was fed."""
    show = lambda tokens: "|".join(json.dumps(t, ensure_ascii=False) for t in tokens)
    return "; ".join(f"step{i}: {show(s['lm_head'])} ~ {show(s['nearest_input'])}" for i, s in enumerate(steps, 1))


def print_trace(record: dict) -> None:
    """The reference's per-problem console trace."""
    lines = [f"\n==================== Problem #{record['index'] + 1} ({record['method']}) ====================",
             "Question:", record["question"].strip()]
    for a in record["agents"]:
        lines.append(f"----- Agent: {a['name']} ({a['role']}) -----")
        lines += ["[To Tokenize]", a["input"].rstrip()]
        if a["latent_steps"]:
            lines += ["[Latent Steps]", str(a["latent_steps"])]
        if a.get("latent_tokens"):
            lines.append("[Latent tokens] " + latent_tokens_line(a["latent_tokens"]))
        lines += ["[Output]", a["output"].rstrip(), f"[Output tokens] {a['output_tokens']}"]
    checked = (f" | checked={record['tests_checked']}/{record['tests_total']}"
               if record.get("tests_total") is not None else "")
    lines.append(f"Result: Pred={record['prediction']} | Gold={short_gold(record)} | OK={record['correct']} | "
                 f"rule={record.get('extraction_rule')}{checked}" + (" | cut at the token budget"
                                                                   if record.get("cut_at_budget") else ""))
    if record.get("failure"):
        lines.append(f"Failure: {record['failure']}")
    tqdm.write("\n".join(lines))


def run_method(method: Method, task: Task, items: list[dict], done: set[int], predictions_path: Path,
               batch_size: int, trace: bool = True, extra: dict | None = None, show_bar: bool = True,
               on_batch: Callable[[int], None] | None = None, desc: str | None = None,
               whole_text: bool = False) -> list[dict]:
    """Run `method` on every item of `task` whose index is not in `done`; the task scores the outputs, and each
    batch's records are appended to predictions_path (results.append_records: flushed and fsynced per batch, so an
    interrupted run loses at most the batch in flight). Returns the new records.
    extra: fields added to every record (run.py: the seed). on_batch(n) after every batch of n items (a launched
    run's global progress, which replaces this bar: show_bar False). desc: the bar's label (default: the method).
    whole_text: --score_whole_text."""
    todo = [i for i in range(len(items)) if i not in done]
    new: list[dict] = []
    bar = tqdm(total=len(items), initial=len(items) - len(todo), desc=desc or method.name, unit="item", dynamic_ncols=True,
               disable=not show_bar)
    correct_before = 0
    # Inside a batch: which agent works and how far it is, beside the running accuracy.
    accuracy = ""
    method.progress = lambda text: bar.set_postfix_str(", ".join(filter(None, [accuracy, text])))
    predictions_path.touch()  # the file exists from the start, also when nothing is left to do
    for start in range(0, len(todo), batch_size):
        indices = todo[start:start + batch_size]
        batch = [items[i] for i in indices]
        method.reset_kv()
        outputs = method.run_batch(batch, task.answer_kind)
        peak = method.kv_peak
        item_bytes = kv_per_item(peak, len(batch)) if peak else [None] * len(batch)
        prompts, cut = [o.final_prompt for o in outputs], [o.cut_at_budget for o in outputs]
        scores = task.score_batch([o.final_text for o in outputs], batch, prompts=prompts, cut_at_budget=cut,
                                  whole_text=whole_text)
        records = []
        for index, item, out, score, kv in zip(indices, batch, outputs, scores, item_bytes):
            record = item_record(method.name, index, item, out, score, whole_text)
            # KV accounting: this item's real positions in the batch's largest cache, and that cache's bytes.
            record["kv_bytes"], record["batch_kv_bytes"] = kv, peak["bytes"] if peak else None
            record.update(extra or {})
            records.append(record)
            if trace:
                print_trace(record)
        append_records(predictions_path, records)
        new += records
        correct_before += sum(score.correct for score in scores)
        accuracy = f"acc={correct_before / max(len(new), 1):.3f}"
        bar.update(len(indices))
        bar.set_postfix_str(accuracy)
        if on_batch is not None:
            on_batch(len(indices))
    method.progress = None
    bar.close()
    return new


def summarize(records: list[dict], wall_seconds: float | None = None) -> dict:
    """Metrics of one method from its records (all of them, resumed ones included)."""
    n = len(records)
    correct = sum(r["correct"] for r in records)
    cut = sum(bool(r.get("cut_at_budget")) for r in records)
    tokens = sum(r["output_tokens"] for r in records)
    seconds = sum(r["seconds"] for r in records)
    item_kv = [r["kv_bytes"] for r in records if r.get("kv_bytes") is not None]
    batch_kv = [r["batch_kv_bytes"] for r in records if r.get("batch_kv_bytes") is not None]
    return {
        "n": n,
        "correct": correct,
        "accuracy": correct / n if n else 0.0,
        "total_output_tokens": tokens,
        "judger_output_tokens": sum(r["judger_output_tokens"] for r in records),
        "avg_output_tokens": tokens / n if n else 0.0,
        "seconds": round(seconds, 3),
        "seconds_per_item": round(seconds / n, 4) if n else 0.0,
        "wall_seconds_this_process": None if wall_seconds is None else round(wall_seconds, 3),
        # Largest KV cache: one item's real positions (what it needs alone), and a whole batch's (padding included).
        "peak_kv_bytes_per_item": max(item_kv) if item_kv else None,
        "peak_kv_bytes_total": max(batch_kv) if batch_kv else None,
        "extraction_rules": extraction_rule_counts(records),
        # Outputs whose decoding hit max_new_tokens (records written before this was recorded count as not cut).
        "cut_at_budget": cut,
        "cut_at_budget_share": cut / n if n else 0.0,
    }


def extraction_rule_counts(records: list[dict]) -> dict[str, dict[str, int]]:
    """{rule: {"n": predictions, "correct": correct ones}}, most used first: how much of the accuracy rests on
    each extraction rule (fallbacks such as last_number included). Records written before rules were recorded
    count as "unrecorded"."""
    n = Counter(r.get("extraction_rule") or "unrecorded" for r in records)
    correct = Counter(r.get("extraction_rule") or "unrecorded" for r in records if r["correct"])
    return {rule: {"n": count, "correct": correct[rule]} for rule, count in n.most_common()}


