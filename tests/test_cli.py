"""run.py end to end on the tiny random Qwen3: result files, resume, batch invariance and bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def run_cli(*args, check=True):
    proc = subprocess.run([sys.executable, "run.py", *map(str, args)], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def lines(out_dir):
    return [json.loads(l) for l in (Path(out_dir) / "predictions.jsonl").read_text().splitlines()]


def common(tiny_model_dir, data_dir, out, n=3, bs=2, *extra):
    return ["--model_name", tiny_model_dir, "--data_dir", data_dir, "--task", "gsm8k", "--max_samples", n,
            "--max_new_tokens", 5, "--temperature", 0, "--generate_bs", bs, "--output_dir", out, "--quiet", *extra]


def test_three_methods_write_results_and_table(tiny_model_dir, data_dir, tmp_path):
    out = tmp_path / "run"
    proc = run_cli("--method", "baseline", "text_mas", "latent_mas", "--latent_steps", 2,
                   *common(tiny_model_dir, data_dir, out))
    records = lines(out)
    assert sorted((r["method"], r["index"]) for r in records) == sorted(
        (m, i) for m in ("baseline", "text_mas", "latent_mas") for i in range(3))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["settings"]["latent_steps"] == 2
    assert summary["settings"]["versions"]["torch"] and summary["settings"]["model"]["origin"]
    for r in records:
        assert r["output_tokens"] == sum(a["output_tokens"] for a in r["agents"])
        assert 1 <= r["judger_output_tokens"] <= 5 and r["gold"]
    latent = [r for r in records if r["method"] == "latent_mas"]
    assert all(r["output_tokens"] == r["judger_output_tokens"] and r["latent_steps"] == 6 for r in latent)
    finals = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
    assert [f["method"] for f in finals] == ["baseline", "text_mas", "latent_mas"]
    assert all("total_output_tokens" in f and "avg_output_tokens" in f for f in finals)
    assert "| LatentMAS |" in proc.stdout and "Speed-up vs TextMAS" in proc.stdout


@pytest.mark.parametrize("prompt", ["sequential", "hierarchical"])
def test_batch_size_does_not_change_greedy_outputs(tiny_model_dir, data_dir, tmp_path, prompt):
    outs = {}
    for bs in (1, 4):
        out = tmp_path / f"bs{bs}"
        run_cli("--method", "latent_mas", "--latent_steps", 3, "--prompt", prompt, *common(tiny_model_dir, data_dir, out, 4, bs))
        # predictions.jsonl keeps no token ids: the texts and each agent's token counts are the strongest record.
        outs[bs] = [(r["final_text"], [a["output_tokens"] for a in r["agents"]])
                    for r in sorted(lines(out), key=lambda r: r["index"])]
    assert outs[1] == outs[4]


def test_killed_run_resumes_without_loss_or_duplicates(tiny_model_dir, data_dir, tmp_path):
    out = tmp_path / "resume"
    # 60 new tokens per item (about half a second each), so the kill lands mid-run.
    args = ["--method", "latent_mas", "--latent_steps", 1, *common(tiny_model_dir, data_dir, out, 6, 1),
            "--max_new_tokens", 60]
    proc = subprocess.Popen([sys.executable, "run.py", *map(str, args)], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pred = out / "predictions.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not pred.exists() or len(pred.read_text().splitlines()) < 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(pred.read_text().splitlines())
    assert 2 <= done_before < 6, "the kill must land mid-run"
    run_cli(*args, "--resume")
    indices = [r["index"] for r in lines(out)]
    assert sorted(indices) == list(range(6))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["methods"]["latent_mas"]["n"] == 6


def one_line_error(proc):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    err = [l for l in proc.stderr.splitlines() if l.strip() and not l.startswith("note:")]
    assert len(err) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return err[0]


def test_bad_input_gives_one_line_and_exit_2(tiny_model_dir, data_dir, tmp_path):
    base = ["--model_name", tiny_model_dir, "--data_dir", data_dir, "--max_samples", 1, "--output_dir", tmp_path / "x"]
    assert "unknown task" in one_line_error(run_cli(*base, "--task", "nosuchtask", check=False))
    assert "latent_steps" in one_line_error(run_cli(*base, "--latent_steps", -1, check=False))
    # A vLLM flag without --use_vllm is refused with or without vLLM installed (tests/test_vllm_backend.py has the rest).
    assert "--use_vllm" in one_line_error(run_cli(*base, "--vllm_kv_cache_gib", 1, check=False))
    empty = tmp_path / "empty"
    empty.mkdir()
    msg = one_line_error(run_cli("--model_name", tiny_model_dir, "--data_dir", empty, "--task", "gsm8k", check=False))
    assert "gsm8k" in msg
    msg = one_line_error(run_cli("--model_name", "no-such-org/no-such-model", "--data_dir", data_dir, "--task",
                                 "gsm8k", "--max_samples", 1, "--output_dir", tmp_path / "y", check=False))
    assert "no-such-org/no-such-model" in msg
    assert "--resume" in one_line_error(run_cli(*base, "--resume", "--output_dir", tmp_path / "nothing", check=False))


def test_resume_with_other_settings_is_refused(tiny_model_dir, data_dir, tmp_path):
    out = tmp_path / "r"
    run_cli("--method", "latent_mas", *common(tiny_model_dir, data_dir, out, 1, 1))
    msg = one_line_error(run_cli("--method", "latent_mas", *common(tiny_model_dir, data_dir, out, 1, 1),
                                 "--latent_steps", 7, "--resume", check=False))
    assert "latent_steps" in msg
