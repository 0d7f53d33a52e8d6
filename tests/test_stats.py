"""Several seeds and paired statistics: stats.py's tests and intervals, summary.json's per-seed mean and sd, the
report's mean ± sd and paired comparisons, and run.py --seed 1 2 3 end to end (with a resume by seed)."""

import json
import statistics
from pathlib import Path

import pytest

import report
import run as cli
from errors import UsageError
import stats


def test_exact_mcnemar_known_values():
    assert stats.exact_mcnemar(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 4096)  # 0.0386
    assert stats.exact_mcnemar(2, 10) == stats.exact_mcnemar(10, 2)
    assert stats.exact_mcnemar(5, 0) == pytest.approx(2 / 32)
    assert stats.exact_mcnemar(0, 0) == 1.0 and stats.exact_mcnemar(4, 4) == 1.0  # capped at 1
    assert stats.exact_mcnemar(30, 10) < 0.01 < stats.exact_mcnemar(12, 8)


def test_bootstrap_interval_is_fixed_and_sensible():
    diffs = [1.0] * 30 + [-1.0] * 10 + [0.0] * 60
    low, high = stats.bootstrap_interval(diffs)
    assert (low, high) == stats.bootstrap_interval(diffs)  # fixed seed: the same report every time
    assert low < 0.2 < high and low > 0  # the mean, and 20 net wins of 100 is clear of 0
    assert stats.bootstrap_interval([0.5] * 7) == (0.5, 0.5)
    wide = stats.bootstrap_interval(diffs[::10])
    assert wide[1] - wide[0] > high - low  # fewer items, wider interval


def table(correct: dict[int, list[bool]]) -> dict[str, dict[int, bool]]:
    """{item: [seed1, seed2, ...]} -> correctness_by_item's shape."""
    return {f"q{i}": {seed: ok for seed, ok in enumerate(oks, 1)} for i, oks in correct.items()}


def test_paired_one_seed_is_mcnemar():
    first = table({i: [i < 10] for i in range(40)})                     # right on items 0-9
    second = table({i: [2 <= i < 20] for i in range(40)})               # right on 2-19: wins 10, loses 2
    result = stats.compare_paired(first, second, "text_mas", "latent_mas")
    assert (result.items, result.seeds, result.better, result.worse) == (40, 1, 10, 2)
    assert result.difference == pytest.approx(100 * (18 - 10) / 40)
    assert result.p_value == pytest.approx(stats.exact_mcnemar(10, 2)) and result.significant
    assert result.ci_low < result.difference < result.ci_high


def test_paired_several_seeds_averages_each_item_and_uses_shared_items():
    first = table({0: [True, True, False], 1: [False, False, False], 2: [True, True, True], 3: [True, False, True]})
    second = table({0: [True, True, True], 1: [True, False, False], 2: [True, True, True]})  # no item 3
    result = stats.compare_paired(first, second, "baseline", "latent_mas")
    assert (result.items, result.seeds, result.better, result.worse) == (3, 3, 2, 0)
    assert result.difference == pytest.approx(100 * (1 / 3 + 1 / 3 + 0) / 3)
    assert result.p_value == pytest.approx(0.5) and not result.significant
    assert stats.compare_paired(first, {}, "a", "b") is None


def per_seed_metrics(n: int, correct: int, tokens: float, seconds: float) -> dict:
    return {"n": n, "correct": correct, "accuracy": correct / n, "total_output_tokens": tokens * n,
            "judger_output_tokens": tokens * n, "avg_output_tokens": tokens, "seconds": seconds,
            "seconds_per_item": seconds / n, "peak_kv_bytes_total": 100 + correct, "peak_kv_bytes_per_item": 10}


def test_aggregate_seeds():
    one = per_seed_metrics(10, 7, 50, 20)
    assert stats.aggregate_seeds({42: one}) == one  # one seed: the single-seed format, unchanged
    runs = {1: per_seed_metrics(10, 7, 50, 20), 2: per_seed_metrics(10, 5, 40, 22), 3: per_seed_metrics(10, 9, 60, 18)}
    agg = stats.aggregate_seeds(runs)
    assert agg["seeds"] == [1, 2, 3] and agg["n"] == 10 and agg["n_total"] == 30 and agg["correct"] == 21
    assert agg["accuracy"] == pytest.approx(0.7) and agg["accuracy_std"] == pytest.approx(statistics.stdev([.7, .5, .9]))
    assert agg["avg_output_tokens"] == pytest.approx(50) and agg["avg_output_tokens_std"] == pytest.approx(10)
    assert agg["peak_kv_bytes_total"] == 109 and agg["per_seed"]["2"] == runs[2]
    assert stats.mean_std([3.0]) == (3.0, None)


# ------------------------------------------------------------------------------------------------------ report


def write_run(root: Path, correct: dict[str, dict[int, list[bool]]], seeds=(1, 2, 3), task="gsm8k") -> Path:
    """A run folder as run.py writes it: predictions.jsonl per (method, seed, item) and the summary from them."""
    root.mkdir(parents=True)
    lines, methods = [], {}
    for method, items in correct.items():
        per_seed = {}
        for k, seed in enumerate(seeds):
            oks = [items[i][k] for i in sorted(items)]
            lines += [{"method": method, "seed": seed, "index": i, "id": f"{task}/{i}", "correct": items[i][k]}
                      for i in sorted(items)]
            per_seed[seed] = per_seed_metrics(len(oks), sum(oks), 100, 10)
        methods[method] = stats.aggregate_seeds(per_seed)
    (root / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    settings = {"task": task, "prompt": "sequential", "model_name": "some/model", "latent_steps": 4,
                "max_samples": -1, "seed": list(seeds) if len(seeds) > 1 else seeds[0]}
    (root / "summary.json").write_text(json.dumps({"settings": settings, "status": "finished", "methods": methods}))
    return root


def test_report_shows_mean_sd_and_paired_comparisons(tmp_path):
    items = range(30)
    run_dir = write_run(tmp_path / "run", {
        "baseline": {i: [i < 11, i < 13, i < 12] for i in items},
        "text_mas": {i: [i < 12, i < 12, i < 14] for i in items},
        "latent_mas": {i: [i < 25, i < 24, i < 26] for i in items}})
    assert report.main([str(run_dir), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| gsm8k"))
    assert "| 30 x 3 seeds |" in row and f"{100 * 25 / 30:.1f} ± {100 * statistics.stdev([25/30, 24/30, 26/30]):.1f}" in row
    assert "## Paired comparisons" in md
    latent_vs_text = next(l for l in md.splitlines() if "LatentMAS vs TextMAS" in l)
    p = stats.exact_mcnemar(14, 0)  # items 12-25 are won by LatentMAS (on average over seeds), none lost
    assert f"| {p:.3g} | real |" in latent_vs_text and "| 30 x 3 |" in latent_vs_text and "14 / 0" in latent_vs_text
    text_vs_single = next(l for l in md.splitlines() if "TextMAS vs Single" in l)
    assert "| 2 / 0 | 0.5 | within noise |" in text_vs_single
    csv_text = (tmp_path / "rep" / "report.csv").read_text()
    assert "latent_mas_vs_text_mas_p_value" in csv_text and "latent_mas_accuracy_std" in csv_text


def test_report_without_predictions_has_no_paired_section(tmp_path):
    run_dir = write_run(tmp_path / "run", {"text_mas": {0: [True]}, "latent_mas": {0: [False]}}, seeds=(42,))
    (run_dir / "predictions.jsonl").unlink()
    assert report.main([str(run_dir), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| gsm8k"))
    assert "Paired comparisons" not in md and "±" not in row and "seeds" not in row


def test_comparison_table_with_seeds():
    agg = stats.aggregate_seeds({1: per_seed_metrics(3, 1, 5, 1), 2: per_seed_metrics(3, 2, 5, 1),
                                 3: per_seed_metrics(3, 3, 5, 1)})
    table = report.comparison_table({"latent_mas": agg})
    assert "| LatentMAS | 66.7 ± 33.3 (3 seeds x 3 items) |" in table


def test_seed_flag(tmp_path):
    assert cli.parse_args([]).seed == [42] and cli.parse_args(["--seed", "1", "2", "3"]).seed == [1, 2, 3]
    with pytest.raises(UsageError, match="twice"):
        cli.validate(cli.parse_args(["--seed", "1", "1"]))
    settings = tmp_path / "s.json"
    settings.write_text(json.dumps({"seed": 7}))  # a settings file from before --seed took several values
    assert cli.parse_args(["--settings_file", str(settings)]).seed == [7]


# ------------------------------------------------------------------------------------------------- end to end


def test_three_seeds_end_to_end_with_resume(tiny_model_dir, data_dir, tmp_path, capsys):
    """run.py --seed 1 2 3 on 3 items, sampled: records per (method, seed, item), per-seed metrics with mean and sd,
    one closing line per method and seed, the report's mean ± sd and paired test; a resume continues by seed."""
    out = tmp_path / "run"
    argv = ["--model_name", tiny_model_dir, "--data_dir", str(data_dir), "--task", "arc_easy", "--max_samples", "3",
            "--max_new_tokens", "4", "--temperature", "0.6", "--generate_bs", "3", "--method", "baseline",
            "latent_mas", "--latent_steps", "1", "--seed", "1", "2", "3", "--output_dir", str(out), "--quiet"]
    assert cli.main(argv) == 0
    records = [json.loads(l) for l in (out / "predictions.jsonl").read_text().splitlines()]
    assert [(r["seed"], r["method"], r["index"]) for r in records] == [
        (s, m, i) for s in (1, 2, 3) for m in ("baseline", "latent_mas") for i in range(3)]
    texts = {s: [r["final_text"] for r in records if r["seed"] == s] for s in (1, 2, 3)}
    assert texts[1] != texts[2] != texts[3]  # each seed samples its own streams
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["seed"] == [1, 2, 3]
    for name, m in summary["methods"].items():
        accs = [m["per_seed"][str(s)]["accuracy"] for s in (1, 2, 3)]
        assert m["seeds"] == [1, 2, 3] and m["n"] == 3 and m["n_total"] == 9
        assert m["accuracy"] == pytest.approx(statistics.mean(accs))
        assert m["accuracy_std"] == pytest.approx(statistics.stdev(accs))
    stdout = capsys.readouterr().out
    finals = [json.loads(l) for l in stdout.splitlines() if l.startswith("{")]
    assert [(f["seed"], f["method"]) for f in finals] == [(s, m) for s in (1, 2, 3) for m in ("baseline", "latent_mas")]
    assert "(3 seeds x 3 items)" in stdout
    assert report.main([str(out), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "3 x 3 seeds" in md and " ± " in md
    assert "| LatentMAS vs Single | 3 x 3 |" in md and ("| real |" in md or "| within noise |" in md)

    # Interrupted after seed 2's baseline (lines cut, status as a kill leaves it): --resume redoes nothing done.
    keep = records[:8]
    (out / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in keep) + '{"meth')
    summary["status"] = "running"
    (out / "summary.json").write_text(json.dumps(summary))
    assert cli.main(argv + ["--resume"]) == 0
    resumed = [json.loads(l) for l in (out / "predictions.jsonl").read_text().splitlines()]
    assert resumed[:8] == keep and len(resumed) == 18
    assert sorted((r["seed"], r["method"], r["index"]) for r in resumed) == sorted(
        (r["seed"], r["method"], r["index"]) for r in records)
    assert [r["final_text"] for r in resumed[8:]] == [r["final_text"] for r in records[8:]]  # per-item streams
