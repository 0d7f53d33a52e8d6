"""scripts/sweep.py: the paper's grid, --shard, finished/resume/new cells, the dry run's listing with KV and time
estimates, a small real sweep that skips finished runs and renders the report; @slow: the SmolLM2 sweep of the
acceptance (2 tasks x 3 methods x 1 topology x 2 seeds x 3 items), killed mid-run and resumed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import sweep  # noqa: E402
from errors import UsageError  # noqa: E402

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def grid(*argv: str) -> list:
    return sweep.expand(sweep.build_parser().parse_args(["--output_dir", "/tmp/unused", *argv]))


def test_paper_grid():
    cells = grid()
    assert len(cells) == 48  # the paper's published rows: 6 tasks x 3 models x 2 topologies + 3 x 2 x 2
    names = {c.name for c in cells}
    assert "Qwen3-14B-aime2025-hierarchical" in names and "Qwen3-4B-aime2024-sequential" not in names
    for c in cells:  # the single agent once per (model, task), in the first topology
        assert ("baseline" in c.methods) == (c.prompt == "sequential")
        assert c.argv[c.argv.index("--seed") + 1:c.argv.index("--max_samples")] == ["1", "2", "3"]
    assert len(grid("--unpublished_cells")) == 54
    both = grid("--baseline_every_topology", "--models", "Qwen/Qwen3-8B", "--tasks", "gsm8k")
    assert [c.methods for c in both] == [["baseline", "text_mas", "latent_mas"]] * 2


def test_shards_split_the_cells():
    cells = grid()
    shards = [sweep.my_cells(cells, (i, 3)) for i in (1, 2, 3)]
    assert sorted(c.name for s in shards for c in s) == sorted(c.name for c in cells)
    assert [len(s) for s in shards] == [16, 16, 16]
    for bad in ("0/3", "4/3", "x", "1/0"):
        with pytest.raises(UsageError):
            sweep.parse_shard(bad)


def test_cell_status(tmp_path, tiny_model_dir, data_dir):
    (cell,) = grid("--models", tiny_model_dir, "--tasks", "gsm8k", "--prompts", "sequential", "--max_samples", "3",
                   "--data_dir", str(data_dir), "--seeds", "1", "2")
    cell.run_dir = tmp_path / "run"
    cell.argv[cell.argv.index("--output_dir") + 1] = str(cell.run_dir)
    assert sweep.cell_status(cell) == "new"
    import run as cli
    from data import get_task

    settings = cli.run_settings(cli.parse_args(cell.argv), get_task("gsm8k"))
    cell.run_dir.mkdir()
    write = lambda status, methods, **change: (cell.run_dir / "summary.json").write_text(json.dumps(
        {"settings": {**settings, **change}, "status": status, "methods": {m: {} for m in methods}}))
    write("finished", cell.methods)
    assert sweep.cell_status(cell) == "finished"
    write("running", cell.methods)
    assert sweep.cell_status(cell) == "resume"
    write("finished", ["baseline"])  # a method still to run
    assert sweep.cell_status(cell) == "resume"
    write("finished", cell.methods, max_samples=2)  # more items asked for now
    assert sweep.cell_status(cell) == "resume"
    write("finished", cell.methods, latent_steps=7)
    with pytest.raises(UsageError, match="latent_steps=7"):
        sweep.cell_status(cell)


def test_dry_run_lists_the_paper_cells(data_dir, tmp_path, capsys):
    assert sweep.main(["--output_dir", str(tmp_path), "--dry_run", "--data_dir", str(data_dir), "--max_samples", "2",
                       "--gpus", "8"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| #")]
    assert len(rows) == 48 and out.startswith("48 cells, 360 method x seed runs")
    row = next(r for r in rows if "Qwen3-14B-aime2025-hierarchical" in r)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:5] == ["text_mas latent_mas", "2", "20000"] and cells[5].endswith("GiB") and cells[7] == "new"
    # The paper's time for the row (Text-MAS 6019 s + LatentMAS 1056 s on 30 items), for 2 items x 3 seeds.
    assert cells[6] == f"{(6019 + 1056) * 2 / 30 * 3 / 60:.0f} min"
    # The KV estimate grows with the budget and the model: 14B AIME above 8B AIME above 8B GSM8K.
    kv = {r.split("|")[2].strip(): float(r.split("|")[6].split()[0]) for r in rows}
    assert kv["Qwen3-14B-aime2025-hierarchical"] > kv["Qwen3-8B-aime2025-hierarchical"] > kv[
        "Qwen3-8B-gsm8k-hierarchical"]
    assert "GPU-hours in all" in out and "with 8 GPU(s) per cell" in out


TASKS = ("gsm8k", "arc_challenge")


def sweep_cmd(out: Path, model: str, data_dir, *extra, tasks=TASKS) -> list[str]:
    return [sys.executable, "scripts/sweep.py", "--output_dir", str(out), "--models", model, "--tasks", *tasks,
            "--prompts", "sequential", "--seeds", "1", "2", "--max_samples", "3", "--data_dir", str(data_dir),
            "--generate_bs", "3", *map(str, extra)]


def check_sweep(out: Path, model_tag: str, tasks=TASKS) -> None:
    """Every run complete (every method x seed x item once), and the report has their rows with paired stats."""
    for task in tasks:
        run_dir = out / "runs" / f"{model_tag}-{task}-sequential"
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["settings"]["seed"] == [1, 2]
        keys = [(r["seed"], r["method"], r["index"]) for r in
                map(json.loads, (run_dir / "predictions.jsonl").read_text().splitlines())]
        assert sorted(keys) == [(s, m, i) for s in (1, 2) for m in ("baseline", "latent_mas", "text_mas")
                                for i in range(3)]
    md = (out / "report" / "report.md").read_text()
    assert md.count("| 3 x 2 seeds |") == len(tasks) and "## Paired comparisons" in md
    assert (out / "report" / "report.png").stat().st_size > 10_000


def test_small_sweep_runs_skips_finished_and_reports(tiny_model_dir, data_dir, tmp_path, capsys):
    """1 task x 3 methods x 1 topology x 2 seeds x 3 items on the tiny model (one run.py process: the slow test
    below has the acceptance's 2 tasks); run again, the run is skipped and the report rendered again."""
    out = tmp_path / "sweep"
    argv = sweep_cmd(out, tiny_model_dir, data_dir, "--max_new_tokens", 3, "--latent_steps", 1, tasks=["gsm8k"])[2:]
    assert sweep.main(argv) == 0  # in this process; each run is a run.py process
    tag = sweep.model_tag(tiny_model_dir)
    check_sweep(out, tag, ["gsm8k"])
    assert f"[1/1] {tag}-gsm8k-sequential: new" in capsys.readouterr().err
    report_md = (out / "report" / "report.md").read_text()
    (out / "report" / "report.md").unlink()
    assert sweep.main(argv) == 0
    assert f"[1/1] {tag}-gsm8k-sequential: finished" in capsys.readouterr().err  # nothing loaded or rerun
    assert (out / "report" / "report.md").read_text() == report_md  # rendered again from the same runs


@pytest.mark.slow
def test_smollm2_sweep_killed_and_resumed(data_dir, tmp_path):
    """The acceptance sweep on the packaged SmolLM2-135M-Instruct: killed (the whole process group, as a job
    scheduler or Ctrl-C would) while the second run is under way, then rerun: the first run is skipped, the
    second resumed without losing or repeating an item, and the report rendered."""
    out = tmp_path / "sweep"
    cmd = sweep_cmd(out, "HuggingFaceTB/SmolLM2-135M-Instruct", data_dir, "--max_new_tokens", 16, "--latent_steps", 2)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    second = out / "runs" / "SmolLM2-135M-Instruct-arc_challenge-sequential" / "predictions.jsonl"
    deadline = time.time() + 1200
    while time.time() < deadline and proc.poll() is None and (
            not second.exists() or len(second.read_text().splitlines()) < 3):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = [json.loads(l) for l in second.read_text().splitlines() if l.endswith("}")]
    assert 3 <= len(before) < 18, "the kill must land in the second run"
    again = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=1800)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "[1/2] SmolLM2-135M-Instruct-gsm8k-sequential: finished" in again.stderr
    assert "[2/2] SmolLM2-135M-Instruct-arc_challenge-sequential: resume" in again.stderr
    check_sweep(out, "SmolLM2-135M-Instruct")
    after = [json.loads(l) for l in second.read_text().splitlines()]
    assert after[:len(before)] == before  # kept, not redone
