"""Re-score a finished run's predictions with the current scoring rules, and say what changed and why.

    python scripts/rescore.py RUN_DIR [RUN_DIR ...] [--data_dir ../shared/data] [--score_whole_text] [--write]

Reads RUN_DIR/predictions.jsonl and summary.json (written by run.py), scores every record's final text again as
run.py would now (utils.read_output, data.Task.score), and prints, per run and method, the accuracy before and
after and every record whose verdict or extraction rule changed, with the old and new rule. Nothing is written
unless --write is given; then predictions.jsonl and summary.json are rewritten with the new verdicts (scoring
fields only: prediction, correct, extraction_rule, cut_at_budget, thinking, answer_text and, for code, failure and
the checked inputs; every method's accuracy, rule counts and share cut at the budget).

Records written before cut_at_budget was recorded: an output is taken as cut when its final agent's output
tokens reached the run's max_new_tokens (an output whose EOS fell exactly on the last token is then counted as
cut too). Code tasks are checked against the items' tests with per-input limits from the reference solutions;
they are loaded from --data_dir (default: the run's own), else each input gets the 1 s floor.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data import Task, get_task  # noqa: E402
from errors import DataError, OneLineParser, UsageError, one_line_errors  # noqa: E402
from flags import add_flags  # noqa: E402
from methods.runner import extraction_rule_counts  # noqa: E402
from results import write_json  # noqa: E402
from stats import aggregate_seeds  # noqa: E402
from utils import ANSWER_RULES, read_output  # noqa: E402

SCORING_METRICS = ("n", "correct", "accuracy", "extraction_rules", "cut_at_budget", "cut_at_budget_share")


def read_run(run_dir: Path) -> tuple[dict, list[dict]]:
    """(summary, records) of a run folder, read without changing anything in it."""
    summary_path, predictions_path = run_dir / "summary.json", run_dir / "predictions.jsonl"
    if not summary_path.is_file() or not predictions_path.is_file():
        raise UsageError(f"{run_dir}: not a run folder (needs summary.json and predictions.jsonl)")
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        get_task(summary["settings"]["task"])
    except (json.JSONDecodeError, KeyError, TypeError, DataError) as exc:
        raise UsageError(f"{summary_path}: not a summary written by run.py ({exc})") from None
    records = []
    for lineno, line in enumerate(predictions_path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise UsageError(f"{predictions_path}:{lineno}: not a JSON line (a torn last line? run.py --resume "
                             "repairs it)") from None
    return summary, records


def short(prediction: str | None) -> str:
    text = repr(prediction)
    return text if len(text) <= 40 else text[:37] + "..."


def was_cut(record: dict, max_new_tokens: int | None) -> bool:
    """The record's cut_at_budget, or for older records: its final agent used the whole budget."""
    if "cut_at_budget" in record:
        return bool(record["cut_at_budget"])
    final = (record.get("agents") or [{}])[-1]
    return max_new_tokens is not None and final.get("output_tokens", 0) >= max_new_tokens


def rescore_record(record: dict, task: Task, item: dict, max_new_tokens: int | None, whole_text: bool) -> dict:
    """The record with its scoring fields from the current rules."""
    prompt = (record.get("agents") or [{}])[-1].get("input", "")
    cut = was_cut(record, max_new_tokens)
    score = task.score(record["final_text"], item, prompt, cut, whole_text)
    reading = read_output(record["final_text"], prompt, cut, whole_text)
    new = {**record, "prediction": score.prediction, "correct": score.correct, "extraction_rule": score.rule,
           "cut_at_budget": cut, "thinking": reading.thinking, "answer_text": reading.answer_text}
    if "entry_point" in record:
        new.update(failure=score.failure, tests_checked=score.tests_checked, tests_total=score.tests_total)
    return new


def rescored_metrics(old: dict, records: list[dict]) -> dict:
    """A method's summary entry with its scoring metrics recomputed (per seed, then aggregated as run.py does)."""
    seeds = sorted({r.get("seed") for r in records}, key=str)
    per_seed = {}
    for seed in seeds:
        mine = [r for r in records if r.get("seed") == seed]
        base = (old.get("per_seed") or {}).get(str(seed), old)
        n, correct, cut = len(mine), sum(r["correct"] for r in mine), sum(r["cut_at_budget"] for r in mine)
        scoring = {"n": n, "correct": correct, "accuracy": correct / n if n else 0.0,
                   "extraction_rules": extraction_rule_counts(mine), "cut_at_budget": cut,
                   "cut_at_budget_share": cut / n if n else 0.0}
        per_seed[seed] = {**{k: v for k, v in base.items() if k not in ("per_seed", "seeds")}, **scoring}
    extra = {k: v for k, v in old.items() if k.startswith("estimated_")}
    return {**aggregate_seeds(per_seed), **extra}


def rescore(run_dir: Path, data_dir: str | None, whole_text: bool, write: bool) -> list[str]:
    """Re-score one run; the lines of its report (and, with write, the folder rewritten)."""
    summary, records = read_run(run_dir)
    settings = summary["settings"]
    task = get_task(settings["task"])
    # The items give what records do not hold: choice options, code's reference solution (its time limits).
    root = data_dir or settings.get("data_dir")
    items = ({it["id"]: it for it in task.load(split=settings.get("split", "test"), data_dir=root)}
             if root and os.path.isdir(root) else {})
    new_records = []
    lines = [f"{run_dir} ({task.name}, {len(records)} predictions, rule: {ANSWER_RULES[whole_text]})"]
    for record in records:
        item = {**items.get(record["id"], {}), **{k: record[k] for k in ("gold", "entry_point") if k in record}}
        new_records.append(rescore_record(record, task, item, settings.get("max_new_tokens"), whole_text))
    for method in dict.fromkeys(r["method"] for r in records):
        old = [r for r in records if r["method"] == method]
        new = [r for r in new_records if r["method"] == method]
        before, after = sum(r["correct"] for r in old), sum(r["correct"] for r in new)
        changes = Counter()
        lines.append(f"  {method}: {before}/{len(old)} -> {after}/{len(new)} correct; "
                     f"cut at the budget: {sum(r['cut_at_budget'] for r in new)}/{len(new)}")
        for o, n in zip(old, new):
            rule_changed = o.get("extraction_rule") not in (None, n["extraction_rule"])  # None: not recorded then
            if (o["correct"], o["prediction"]) == (n["correct"], n["prediction"]) and not rule_changed:
                continue
            changes[(o["correct"], n["correct"])] += 1
            seed = f", seed {o['seed']}" if "seed" in o else ""
            lines.append(f"    item {o['index']}{seed}: {short(o['prediction'])} ({'correct' if o['correct'] else 'wrong'}"
                         f", {o.get('extraction_rule') or 'rule not recorded'}) -> {short(n['prediction'])} "
                         f"({'correct' if n['correct'] else 'wrong'}, {n['extraction_rule']})"
                         + ("; cut at the token budget" if n["cut_at_budget"] else ""))
        lines.append("    changed: " + (", ".join(f"{'correct' if a else 'wrong'} -> {'correct' if b else 'wrong'}: {k}"
                                                  for (a, b), k in sorted(changes.items())) or "none"))
    if write:
        with (run_dir / "predictions.jsonl").open("w", encoding="utf-8") as f:
            for record in new_records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        for method in summary.get("methods", {}):
            mine = [r for r in new_records if r["method"] == method]
            if mine:
                summary["methods"][method] = rescored_metrics(summary["methods"][method], mine)
        settings.update(score_whole_text=whole_text, answer_rule=ANSWER_RULES[whole_text])
        write_json(run_dir / "summary.json", summary)
        lines.append(f"  rewritten: {run_dir / 'predictions.jsonl'}, {run_dir / 'summary.json'}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dirs", nargs="+", type=Path, help="folders written by run.py")
    add_flags(p, "data_dir", "score_whole_text")
    p.add_argument("--write", action="store_true", help="rewrite predictions.jsonl and summary.json")
    args = p.parse_args(argv)
    for run_dir in args.run_dirs:
        print("\n".join(rescore(run_dir, args.data_dir, args.score_whole_text, args.write)))
    return 0


if __name__ == "__main__":
    sys.exit(one_line_errors(main, "rescore.py"))
