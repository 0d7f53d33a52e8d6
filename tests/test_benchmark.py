"""scripts/benchmark.py end to end on the tiny random Qwen3: every section is measured and written."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from test_cli import ENV, ROOT


def test_benchmark_writes_every_section(tiny_model_dir, data_dir, tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, "scripts/benchmark.py", "--model_name", tiny_model_dir, "--data_dir", str(data_dir),
         "--max_samples", "3", "--max_new_tokens", "4", "--latent_steps", "2", "--contexts", "16", "--reps", "2",
         "--batch_sizes", "1", "2", "--output_dir", str(out)],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "benchmark.json").read_text())
    [step] = result["steps"]
    assert step["context"] == 16 and step["latent_step_ms"] > 0 and step["decode_step_ms"] > 0
    assert [r["generate_bs"] for r in result["batching"]] == [1, 2]
    assert all(r["items"] == 3 and r["same_outputs_as_first"] == 3 for r in result["batching"])
    assert result["batching"][0]["vs_bs1"] == 1.0
    kv = [r for r in result["memory"] if "kv_bytes_per_item" in r]
    assert [r["after"] for r in kv][:3] == ["planner", "critic", "refiner"]
    assert kv[0]["positions"] < kv[1]["positions"] < kv[2]["positions"]
    methods = {(r["topology"], r["method"]) for r in result["methods"]}
    assert methods == {("sequential", "baseline"), ("sequential", "text_mas"), ("sequential", "latent_mas"),
                       ("hierarchical", "text_mas"), ("hierarchical", "latent_mas")}
    latent = next(r for r in result["methods"] if r["method"] == "latent_mas" and r["topology"] == "sequential")
    assert 0 < latent["tokens_vs_text_mas"] < 1  # the judger alone writes text
    assert "## latent_mas throughput by batch size" in (out / "benchmark.md").read_text()


def test_benchmark_scripts_reject_bad_input_in_one_line(tmp_path):
    for script, args in [("scripts/benchmark.py", ["--task", "nope"]),
                         ("scripts/benchmark.py", ["--methods_from", str(tmp_path / "missing")]),
                         *([("scripts/benchmark.py", ["--backend", "hf", "vllm", "--max_samples", "1"])]
                           if importlib.util.find_spec("vllm") is None else []),
                         ("scripts/profile_forwards.py", ["--data_dir", str(tmp_path / "no-data")])]:
        proc = subprocess.run([sys.executable, script, *args, *(["--output_dir", str(tmp_path / "b")] if "bench" in script else [])],
                              cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, (script, proc.stderr[-2000:])
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"{Path(script).name}: error: ")


def test_benchmark_backends_side_by_side_on_hf(tiny_model_dir, data_dir, tmp_path):
    """--backend: decode throughput per dtype and batch size, and the paper's comparison section (here on the HF
    backend alone; with vllm installed, `--backend hf vllm` adds its rows and TextMAS on vLLM)."""
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, "scripts/benchmark.py", "--backend", "hf", "--model_name", tiny_model_dir, "--data_dir",
         str(data_dir), "--max_samples", "2", "--max_new_tokens", "3", "--latent_steps", "1", "--generate_bs", "2",
         "--throughput_batch_sizes", "1", "2", "--throughput_max_new_tokens", "3", "--output_dir", str(out)],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "benchmark.json").read_text())
    assert [(r["backend"], r["dtype"], r["batch"]) for r in result["throughput"]] == [
        ("hf", d, b) for d in ("bfloat16", "float32") for b in (1, 2)]
    assert all(r["tokens"] == 3 * r["batch"] and r["tokens_per_s"] > 0 for r in result["throughput"])
    [latent] = result["paper"]
    assert latent["decoder"] == "HF (KV hand-off)" and latent["items"] == 2 and latent["output_tokens"] <= 6
    assert "## Decode throughput by backend" in (out / "benchmark.md").read_text()
