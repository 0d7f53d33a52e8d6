"""report.py and paper_results.py on fake run directories: table values, merging, the paper lookup, the files
written, and the one-line exit-2 errors. Fast: no model, one PNG."""

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import report
from errors import InputError
from paper_results import PAPER_ROWS, SPLIT_SIZES, lookup

ROOT = Path(__file__).resolve().parents[1]
PAPER_MD = ROOT.parent / "shared" / "docs" / "paper.md"


def metrics(n: int, correct: int, avg_tokens: float, seconds: float) -> dict:
    """A method's entry as methods/runner.py summarize() writes it."""
    return {"n": n, "correct": correct, "accuracy": correct / n, "total_output_tokens": avg_tokens * n,
            "judger_output_tokens": avg_tokens * n, "avg_output_tokens": avg_tokens, "seconds": seconds,
            "seconds_per_item": seconds / n, "wall_seconds_this_process": seconds}


def write_run(root: Path, name: str, methods: dict, task: str = "gsm8k", prompt: str = "sequential",
              model: str = "Qwen/Qwen3-8B", latent_steps: int = 40, status: str = "finished", **extra) -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    settings = {"task": task, "prompt": prompt, "model_name": model, "latent_steps": latent_steps,
                "max_new_tokens": 2048, "temperature": 0.6, "top_p": 0.95, "split": "test",
                "model": {"name": model}, **extra}
    summary = {"settings": settings, "status": status, "methods": methods}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def records_of(*run_dirs: Path) -> list[dict]:
    rows = report.build_rows([report.load_run(d) for d in run_dirs])
    return [report.row_record(r) for r in rows]


ALL_THREE = {"baseline": metrics(10, 7, 1000, 50), "text_mas": metrics(10, 8, 2000, 100),
             "latent_mas": metrics(10, 9, 500, 25)}


def test_table_values_accuracy_tokens_speedup(tmp_path):
    (rec,) = records_of(write_run(tmp_path, "all", ALL_THREE, model="some/other-model"))
    assert rec["baseline_accuracy"] == pytest.approx(70.0)
    assert rec["text_mas_accuracy"] == pytest.approx(80.0)
    assert rec["latent_mas_accuracy"] == pytest.approx(90.0)
    assert rec["latent_mas_tokens"] == 500 and rec["latent_mas_seconds_per_item"] == pytest.approx(2.5)
    assert rec["improve_accuracy_pts"] == pytest.approx(10.0)
    assert rec["improve_token_reduction_pct"] == pytest.approx(75.0)
    assert rec["improve_speedup"] == pytest.approx(4.0)
    assert rec["paper_latent_mas_accuracy"] is None and rec["paper_improve_speedup"] is None  # no paper row
    md = report.markdown(report.build_rows([report.load_run(tmp_path / "all")]), [rec])
    row = next(line for line in md.splitlines() if line.startswith("| gsm8k"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # Task, Model, Topology, n, m, then Acc/Tokens/s per method, then the Improve columns.
    assert cells[:5] == ["gsm8k", "some/other-model", "sequential", "10", "40"]
    assert cells[5:14] == ["70.0", "1000", "5.00", "80.0", "2000", "10.0", "90.0", "500", "2.50"]
    assert cells[14:] == ["+10.0", "75.0%", "4.00x"]


def test_separate_runs_merge_and_missing_method_is_dash(tmp_path):
    a = write_run(tmp_path, "text", {"baseline": metrics(10, 7, 1000, 50), "text_mas": metrics(10, 8, 2000, 100)})
    b = write_run(tmp_path, "latent", {"latent_mas": metrics(10, 9, 500, 25)})
    c = write_run(tmp_path, "hier", {"latent_mas": metrics(10, 6, 400, 20)}, prompt="hierarchical")
    recs = records_of(a, b, c)
    assert [(r["topology"], r["latent_steps"]) for r in recs] == [("hierarchical", 40), ("sequential", 40)]
    hier, seq = recs
    assert seq["improve_speedup"] == pytest.approx(4.0)  # TextMAS from one dir, LatentMAS from the other
    assert seq["runs"] == f"{b}; {a}" or seq["runs"] == f"{a}; {b}"
    # The single agent has no topology: the hierarchical row borrows the sequential baseline.
    assert hier["baseline_accuracy"] == pytest.approx(70.0)
    assert hier["text_mas_accuracy"] is None and hier["improve_speedup"] is None
    md = report.markdown(report.build_rows([report.load_run(d) for d in (a, b, c)]), recs)
    hier_line = next(line for line in md.splitlines() if "| hierarchical |" in line)
    assert "| - (" in hier_line  # TextMAS missing, paper figure still shown
    assert "Single taken from the sequential run" in md


def test_latent_sweep_and_duplicates(tmp_path):
    text = write_run(tmp_path, "text", {"text_mas": metrics(20, 16, 2000, 100)})
    m10 = write_run(tmp_path, "m10", {"latent_mas": metrics(15, 12, 500, 20)}, latent_steps=10)
    m40_small = write_run(tmp_path, "m40a", {"latent_mas": metrics(5, 5, 500, 5)})
    m40 = write_run(tmp_path, "m40b", {"latent_mas": metrics(20, 18, 500, 25)})
    rows = report.build_rows([report.load_run(d) for d in (text, m10, m40_small, m40)])
    assert [r.latent_steps for r in rows] == [10, 40]  # one row per m, sharing the TextMAS entry
    assert all(r.entries["text_mas"].run.path == text for r in rows)
    assert rows[1].entries["latent_mas"].run.path == m40  # the larger sample wins
    assert "m40a (n=5) ignored" in " ".join(rows[1].notes)
    assert report.n_cell(report.row_record(rows[0])) == "-/20/15"
    assert all(not r.distinct for r in rows)  # an m sweep is not a split: m has its own column


def test_report_refuses_to_mix_settings_in_one_row(tmp_path):
    """Runs that differ in a result-changing setting never share a row, so no ratio spans two settings."""
    text = write_run(tmp_path, "text", {"baseline": metrics(10, 7, 1000, 50), "text_mas": metrics(10, 8, 2000, 100)})
    cases = {"max_new_tokens": 512, "temperature": 0.0, "top_p": 0.8, "top_k": 20, "seed": 7, "think": True,
             "disable_thinking": True}
    for key, value in cases.items():
        other = write_run(tmp_path / key, "latent", {"latent_mas": metrics(10, 9, 500, 25)}, **{key: value})
        rows = report.build_rows([report.load_run(d) for d in (text, other)])
        assert len(rows) == 2, key
        for row in rows:  # neither row holds both TextMAS and LatentMAS: no Improve ratio across the settings
            assert not {"text_mas", "latent_mas"} <= set(row.entries), key
            assert report.row_record(row)["improve_speedup"] is None
            assert list(row.distinct) == [key] and f"differ in {key}" in " ".join(row.notes)
        assert {report.settings_label(r) for r in rows} == {f"{key}={recorded_text(key)}", f"{key}={json.dumps(value)}"}
    # MAS details must agree between TextMAS and LatentMAS; the single agent is shared (it has no topology).
    chain = write_run(tmp_path / "chain", "latent", {"latent_mas": metrics(10, 9, 500, 25)}, hierarchy="chain")
    plain = write_run(tmp_path / "plain", "text", {"text_mas": metrics(10, 8, 2000, 100)}, hierarchy="parallel")
    single = write_run(tmp_path / "single", "base", {"baseline": metrics(10, 7, 1000, 50)})
    rows = report.build_rows([report.load_run(d) for d in (chain, plain, single)])
    assert [sorted(r.entries) for r in rows] == [["baseline", "latent_mas"], ["baseline", "text_mas"]]
    # The single agent is borrowed across topologies only with the same settings.
    hier = write_run(tmp_path / "hier", "latent", {"latent_mas": metrics(10, 9, 500, 25)}, prompt="hierarchical",
                     temperature=0.0)
    (hier_row, _) = report.build_rows([report.load_run(d) for d in (hier, text)])
    assert hier_row.topology == "hierarchical" and "baseline" not in hier_row.entries
    # The same settings merge, as before; the markdown names the split rows' settings in their own column.
    same = write_run(tmp_path / "same", "latent", {"latent_mas": metrics(10, 9, 500, 25)})
    (row,) = report.build_rows([report.load_run(d) for d in (text, same)])
    assert set(row.entries) == {"baseline", "text_mas", "latent_mas"} and not row.distinct
    split = report.build_rows([report.load_run(d) for d in (text, tmp_path / "seed" / "latent")])
    md = report.markdown(split, [report.row_record(r) for r in split])
    assert "| m | Settings |" in md and "| seed=7 |" in md and "| seed=42 |" not in md  # seed absent: not recorded
    assert '| seed="(not recorded)" |' not in md and "seed=(not recorded)" in md


def recorded_text(key: str) -> str:
    """How a row labels write_run's value of a setting not given to it (a key it does not write: not recorded)."""
    return {"max_new_tokens": "2048", "temperature": "0.6", "top_p": "0.95"}.get(key, "(not recorded)")


def test_paper_lookup_qwen3_8b_gsm8k_sequential(tmp_path):
    row = lookup("gsm8k", "Qwen/Qwen3-8B", "sequential")
    assert (row.task, row.model) == ("GSM8K", "8B")
    assert row.accuracy == (81.1, 92.3, 93.8) and row.tokens == (1280, 2324, 860) and row.seconds == (449, 1739, 543)
    assert row.figures("latent_mas").seconds_per_item == pytest.approx(543 / 1319)
    assert lookup("gsm8k", "Qwen/Qwen2.5-7B", "sequential") is None
    assert lookup("aime2024", "Qwen/Qwen3-4B", "sequential") is None  # no 4B figures for AIME
    assert lookup("gpqa", "Qwen/Qwen3-14B", "hierarchical").accuracy == (48.5, 52.0, 53.0)
    assert len(PAPER_ROWS) == 48 and set(SPLIT_SIZES) == {r.task for r in PAPER_ROWS.values()}

    (rec,) = records_of(write_run(tmp_path, "r", ALL_THREE))
    assert rec["paper_model"] == "8B" and rec["paper_text_mas_accuracy"] == 92.3
    assert rec["paper_improve_accuracy_pts"] == pytest.approx(1.5)
    assert rec["paper_improve_token_reduction_pct"] == pytest.approx(100 * (1 - 860 / 2324))
    assert rec["paper_improve_speedup"] == pytest.approx(1739 / 543)
    assert report.cell(rec, "latent_mas_accuracy", "acc") == "90.0 (93.8)"
    assert report.cell(rec, "improve_speedup", "x") == "4.00x (3.20x)"


@pytest.mark.skipif(not PAPER_MD.exists(), reason="shared/docs/paper.md not present")
def test_paper_rows_match_paper_md():
    """Guard against typos: every published row in paper.md equals the data, and nothing else is there."""
    section = PAPER_MD.read_text().split("## Published results")[1].split("\n## ")[0]
    topology, seen = None, set()
    for line in section.splitlines():
        topology = {"Sequential:": "sequential", "Hierarchical:": "hierarchical"}.get(line.strip(), topology)
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not re.fullmatch(r"\d+B", cells[-4] if len(cells) >= 5 else ""):
            continue
        topo = {"seq": "sequential", "hier": "hierarchical"}[cells[0]] if len(cells) == 6 else topology
        task, model, acc, tok, sec = cells[-5:]
        row = PAPER_ROWS[(topo, task, model)]
        assert row.accuracy == tuple(float(x) for x in acc.split(" / "))
        assert row.tokens == tuple(int(x) for x in tok.split(" / "))
        assert row.seconds == tuple(int(x) for x in sec.split(" / "))
        seen.add((topo, task, model))
    assert seen == set(PAPER_ROWS)


def test_cli_writes_md_csv_png(tmp_path):
    a = write_run(tmp_path / "runs", "seq", ALL_THREE)
    b = write_run(tmp_path / "runs", "hier", ALL_THREE, prompt="hierarchical", status="interrupted")
    c = write_run(tmp_path / "runs", "arc", ALL_THREE, task="arc_easy", model="Qwen/Qwen3-4B", latent_steps=10)
    out = tmp_path / "report"
    assert report.main([str(a), str(b), str(c), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "90.0 (93.8)" in md and "status 'interrupted'" in md and "n=10: ±31.0 pts" in md
    with (out / "report.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    assert float(rows[0]["improve_speedup"]) == pytest.approx(4.0) and rows[0]["paper_model"] == "4B"
    png = (out / "report.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000


def test_png_shows_every_row_label_and_a_paper_entry_only_with_paper_points(tmp_path):
    """The saved image holds every text of the figure (row labels as long as a row's settings are not cut off at
    its edge), and the legend names the paper's hollow markers only when some are drawn."""
    from PIL import Image

    long = {"max_new_tokens": 512, "temperature": 0.0, "top_k": 5, "model": "org/a-rather-long-model-name-Instruct"}
    ours = [write_run(tmp_path / "o1", "r", ALL_THREE, model=long["model"]),
            write_run(tmp_path / "o2", "r", {"latent_mas": metrics(10, 9, 500, 25)}, **long)]
    for runs, paper in ((ours, False), ([*ours, write_run(tmp_path, "qwen3", ALL_THREE)], True)):
        records = records_of(*runs)
        fig = report.report_figure(records)
        labels = "\n".join(t.get_text() for t in fig.texts)
        assert all(f"{i}: {report.rec_label(r)}" in labels for i, r in enumerate(records, 1))
        assert "max_new_tokens=512, temperature=0.0, top_k=5" in labels
        legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        assert ("paper" in legend) == paper, legend
        drawn = fig.get_tightbbox(fig.canvas.get_renderer())  # inches: everything drawn, labels included
        report.write_png(tmp_path / "report.png", records)
        width, height = Image.open(tmp_path / "report.png").size
        assert width / 110 >= drawn.width and height / 110 >= drawn.height, (width, height, drawn)


def test_out_that_is_a_file_is_one_line_exit_2(tmp_path):
    run = write_run(tmp_path, "run", ALL_THREE)
    afile = tmp_path / "taken"
    afile.write_text("x")
    result = run_cli(str(run), "--out", str(afile))
    assert result.returncode == 2 and result.stderr == f"report.py: error: --out {afile} is a file, not a folder; " \
                                                       "choose a folder for the results\n"
    with pytest.raises(InputError, match="is a file, so the folder cannot be created there"):
        report.main([str(run), "--out", str(afile / "report")])
    assert afile.read_text() == "x"


def test_comparison_table_keeps_its_columns():
    table = report.comparison_table(ALL_THREE)
    lines = table.splitlines()
    assert lines[0] == ("| Method | Accuracy (%) | Output tokens / item | Seconds | Tokens vs TextMAS | "
                        "Speed-up vs TextMAS | Cut at budget (%) |")
    assert lines[4] == "| LatentMAS | 90.0 (9/10) | 500.0 | 25.0 | 75.0% fewer | 4.00x | - |"
    assert "| Single | 70.0 (7/10) | 1000.0 | 50.0 | 50.0% fewer | 2.00x | - |" in table


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "report.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


BAD_METRIC = {"settings": {"task": "gsm8k", "prompt": "sequential", "model_name": "m"},
              "methods": {"latent_mas": {"n": 3, "accuracy": "high"}}}


@pytest.mark.parametrize("content", ["{not json", json.dumps(BAD_METRIC)])
def test_malformed_summary_exits_2_with_one_line(tmp_path, content):
    good = write_run(tmp_path, "good", ALL_THREE)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "summary.json").write_text(content)
    result = run_cli(str(good), str(bad), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("report.py: error: ")
    assert str(bad / "summary.json") in result.stderr
    assert not (tmp_path / "out").exists()  # nothing written when an input is bad


@pytest.mark.parametrize("content, message", [
    (None, "not found"),
    (json.dumps({"settings": {"task": "gsm8k"}, "methods": {}}), "settings.prompt is missing"),
    (json.dumps({"settings": {"task": "t", "prompt": "p", "model_name": "m"}, "methods": {"x": {}}}), "unknown method"),
    (json.dumps({**BAD_METRIC, "methods": {"text_mas": {**metrics(4, 2, 1, 1), "accuracy": 50}}}), "fraction"),
    ("[]", "expected an object"),
])
def test_other_bad_inputs_are_one_line_errors(tmp_path, content, message):
    """The same checks in-process (a subprocess each would cost the 5 s budget)."""
    bad = tmp_path / "bad"
    bad.mkdir()
    if content is not None:
        (bad / "summary.json").write_text(content)
    with pytest.raises(report.ReportError, match=message) as info:
        report.main([str(bad), "--out", str(tmp_path / "out")])
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="required"):
        report.main([str(bad)])  # no --out: one line too (a usage error), not argparse's usage text and exit
