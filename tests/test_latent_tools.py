"""Audit, calibration and memory tools on the tiny random Qwen3: --decode_latents, scripts/calibrate.py with
run.py --settings_file, and the KV estimate against the measured peak (--max_kv_bytes / --max_kv_tokens)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

import run
from data import get_task
from methods import METHODS, MethodSettings
from methods.runner import item_record, print_trace, run_method, summarize
from prompts import PromptBook
from utils import Score

ROOT = Path(__file__).resolve().parents[1]
ITEMS = [{"question": "What is 2 + 3?", "gold": "5"},
         {"question": "Tom has 7 apples and eats two of them. How many are left?", "gold": "5"}]


def make(name, wrapper, **kw):
    kw.setdefault("max_new_tokens", 3)
    return METHODS[name](wrapper, MethodSettings(temperature=0.0, **kw), PromptBook.load())


def gsm8k_items(data_dir, n=4):
    from data import load_task

    return load_task("gsm8k", data_dir=str(data_dir), max_samples=n)


# ------------------------------------------------------------------------------------------------ decode_latents

def planner_of(out):
    return out.agents[0]


def test_decode_latents_reads_every_step_through_lm_head_and_embeddings(make_tiny_wrapper, capsys):
    wrapper = make_tiny_wrapper()
    k, steps = 4, 2
    outs = make("latent_mas", wrapper, latent_steps=steps, decode_latents=k).run_batch(ITEMS, "number")
    for out in outs:
        thinkers, judger = out.agents[:-1], out.agents[-1]
        assert judger.latent_tokens is None
        for agent in thinkers:
            assert len(agent.latent_tokens) == steps
            for step in agent.latent_tokens:
                assert all(len(step[key]) == k for key in ("lm_head", "lm_head_prob", "nearest_input", "nearest_input_cos"))
                assert step["lm_head_prob"] == sorted(step["lm_head_prob"], reverse=True)
                assert step["nearest_input_cos"] == sorted(step["nearest_input_cos"], reverse=True)

    # The planner's steps, recomputed by hand from the hidden states that produced them.
    planner = outs[1].agents[0]
    ids, mask = wrapper.encode([planner.input])
    _, hidden = wrapper.latent_rollout(ids, mask, steps, keep_hidden=True)
    vocab = len(wrapper.tokenizer)
    table = wrapper.model.get_input_embeddings().weight[:vocab]
    for h, step in zip(hidden, planner.latent_tokens):
        logits = wrapper.model.lm_head(h)[0, :vocab]
        expected = [wrapper.tokenizer.decode([i]) for i in logits.topk(k).indices.tolist()]
        assert step["lm_head"] == expected
        fed = wrapper.realign(h)[0]
        cos = torch.nn.functional.cosine_similarity(table, fed[None], dim=-1)
        assert step["nearest_input"] == [wrapper.tokenizer.decode([i]) for i in cos.topk(k).indices.tolist()]
        assert abs(step["nearest_input_cos"][0] - cos.max().item()) < 1e-3

    record = item_record("latent_mas", 0, ITEMS[0], outs[0], Score("5", True, "last_boxed"))
    assert json.loads(json.dumps(record))["agents"][0]["latent_tokens"] == planner_of(outs[0]).latent_tokens
    print_trace(record)
    printed = [l for l in capsys.readouterr().out.splitlines() if l.startswith("[Latent tokens]")]
    assert len(printed) == 3 and all(l.count("step") == steps for l in printed)
    assert all(f'"{t}"' in printed[0] or json.dumps(t, ensure_ascii=False) in printed[0]
               for t in outs[0].agents[0].latent_tokens[0]["lm_head"])


def test_decode_latents_hierarchical_specialists(make_tiny_wrapper):
    wrapper = make_tiny_wrapper()
    outs = make("latent_mas", wrapper, topology="hierarchical", latent_steps=1, decode_latents=2).run_batch(ITEMS, "number")
    for out in outs:
        assert [len(a.latent_tokens) for a in out.agents[:3]] == [1, 1, 1] and out.agents[3].latent_tokens is None
    # Each specialist row gets its own thoughts: the first step follows each specialist's own prompt.
    assert len({tuple(a.latent_tokens[0]["lm_head"]) for a in outs[0].agents[:3]}) > 1


@pytest.mark.parametrize("topology", ["sequential", "hierarchical"])
def test_decode_latents_off_does_no_extra_work(make_tiny_wrapper, monkeypatch, topology):
    wrapper = make_tiny_wrapper()
    keep = []
    original = wrapper.latent_rollout
    monkeypatch.setattr(wrapper, "latent_rollout", lambda *a, keep_hidden=False, **kw: keep.append(keep_hidden) or
                        original(*a, keep_hidden=keep_hidden, **kw))
    monkeypatch.setattr(wrapper, "decode_thoughts", lambda *a, **kw: pytest.fail("decode_thoughts ran while off"))
    outs = make("latent_mas", wrapper, topology=topology, latent_steps=2).run_batch(ITEMS, "number")
    assert keep and not any(keep)
    record = item_record("latent_mas", 0, ITEMS[0], outs[0], Score(None, False, "none"))
    assert all("latent_tokens" not in a for a in record["agents"])


# ------------------------------------------------------------------------------------------------ KV memory

@pytest.mark.parametrize("config,bs", [
    (dict(topology="sequential", latent_steps=5), 2),
    (dict(topology="hierarchical", latent_steps=10), 3),
    (dict(topology="sequential", latent_steps=20, latent_only=True), 1),
])
def test_kv_estimate_matches_measured_peak(make_tiny_wrapper, data_dir, tmp_path, config, bs):
    wrapper = make_tiny_wrapper()
    items = gsm8k_items(data_dir, 3 if bs > 1 else 2)
    method = make("latent_mas", wrapper, max_new_tokens=3, **config)
    estimate = method.estimate_kv(items, "number", bs)
    records = run_method(method, get_task("gsm8k"), items, set(), tmp_path / "p.jsonl", bs, trace=False)
    metrics = summarize(records)
    measured_total, measured_item = metrics["peak_kv_bytes_total"], metrics["peak_kv_bytes_per_item"]
    assert abs(estimate["bytes_total"] - measured_total) <= 0.10 * measured_total
    assert abs(estimate["bytes_per_item"] - measured_item) <= 0.10 * measured_item
    if all(r["judger_output_tokens"] == 3 for r in records):  # decoding ran to the budget: the estimate is exact
        assert (estimate["bytes_total"], estimate["bytes_per_item"]) == (measured_total, measured_item)
    assert estimate["bytes_per_position"] == 2 * 2 * 2 * 16 * 4  # K,V x layers x kv heads x head_dim x fp32
    assert all(r["batch_kv_bytes"] >= r["kv_bytes"] > 0 for r in records)


def test_kv_estimate_baseline_exact_and_text_mas_bound(make_tiny_wrapper, data_dir, tmp_path):
    wrapper = make_tiny_wrapper()
    items = gsm8k_items(data_dir, 3)
    base = make("baseline", wrapper, max_new_tokens=3)
    records = run_method(base, get_task("gsm8k"), items, set(), tmp_path / "b.jsonl", 2, trace=False)
    if all(r["output_tokens"] == 3 for r in records):
        assert base.estimate_kv(items, "number", 2)["bytes_total"] == summarize(records)["peak_kv_bytes_total"]
    text = make("text_mas", wrapper, max_new_tokens=3).estimate_kv(items, "number", 2)
    assert text["bytes_total"] > base.estimate_kv(items, "number", 2)["bytes_total"]


# ------------------------------------------------------------------------------------------------ run.py flags

def cli_error(monkeypatch, capsys, *argv):
    monkeypatch.setattr(sys, "argv", ["run.py", *map(str, argv)])
    assert run.cli() == 2
    stderr = capsys.readouterr().err
    err = [l for l in stderr.splitlines() if l.startswith("run.py: error:")]
    assert len(err) == 1 and "Traceback" not in stderr, stderr
    return err[0]


def test_settings_file_parsing_and_errors(tmp_path, monkeypatch, capsys):
    good = tmp_path / "best.json"
    good.write_text(json.dumps({"latent_steps": 7, "latent_space_realign": True, "method": ["latent_mas"],
                                "calibration": {"task": "gsm8k"}}))
    args = run.parse_args(["--settings_file", str(good)])
    assert (args.latent_steps, args.latent_space_realign) == (7, True)
    assert args.settings_file_applied == {"latent_steps": 7, "latent_space_realign": True, "method": ["latent_mas"]}
    args = run.parse_args(["--settings_file", str(good), "--latent_steps", "2"])
    assert args.latent_steps == 2 and args.settings_file_overridden == ["latent_steps"]
    assert "latent_steps" not in args.settings_file_applied

    cases = {"not json {": "invalid JSON", "[1, 2]": "JSON object", '{"latent_stepz": 3}': "not a run.py flag",
             '{"latent_steps": "many"}': "invalid int", '{"latent_space_realign": 1}': "true or false",
             '{"latent_steps": -3}': "latent_steps", '{"prompt": "star"}': "invalid choice"}
    for i, (text, expected) in enumerate(cases.items()):
        bad = tmp_path / f"bad{i}.json"
        bad.write_text(text)
        assert expected in cli_error(monkeypatch, capsys, "--settings_file", bad, "--task", "gsm8k")
    assert "not found" in cli_error(monkeypatch, capsys, "--settings_file", tmp_path / "missing.json")
    # --prompt_file shares the reader: the same one-line errors, naming the flag's file.
    (tmp_path / "prompts.json").write_text("{not json")
    assert "prompt file" in cli_error(monkeypatch, capsys, "--prompt_file", tmp_path / "missing.json", "--task", "gsm8k")
    assert "invalid JSON at line 1" in cli_error(monkeypatch, capsys, "--prompt_file", tmp_path / "prompts.json",
                                                 "--task", "gsm8k")
    assert "--decode_latents" in cli_error(monkeypatch, capsys, "--decode_latents", -1)
    assert "cannot read size" in cli_error(monkeypatch, capsys, "--max_kv_bytes", "lots")
    assert run.parse_size("512MiB") == 512 * 2 ** 20 and run.parse_size("2GB") == 2 * 10 ** 9
    assert run.parse_size("1.5G") == int(1.5 * 2 ** 30) and run.parse_size("1000") == 1000


def test_kv_budget_refuses_before_any_work(tiny_model_dir, data_dir, tmp_path, monkeypatch, capsys):
    base = ["--model_name", tiny_model_dir, "--data_dir", data_dir, "--task", "gsm8k", "--max_samples", 3,
            "--latent_steps", 4, "--max_new_tokens", 5, "--generate_bs", 2, "--quiet"]
    out = tmp_path / "refused"
    line = cli_error(monkeypatch, capsys, *base, "--output_dir", out, "--max_kv_bytes", "100KiB", "--max_kv_tokens", 50)
    assert "estimated peak KV cache" in line and "bytes" in line
    assert "over --max_kv_bytes 100KiB and --max_kv_tokens 50" in line
    assert not out.exists(), "nothing may be written before refusing"


# ------------------------------------------------------------------------------------------------ calibration

def load_calibrate():
    spec = importlib.util.spec_from_file_location("calibrate", ROOT / "scripts" / "calibrate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_calibrate_then_run_from_settings_file(tiny_model_dir, data_dir, tmp_path, capsys):
    calibrate = load_calibrate()
    out = tmp_path / "cal"
    assert calibrate.main(["--model_name", tiny_model_dir, "--data_dir", str(data_dir), "--task", "gsm8k",
                           "--dev_samples", "2", "--latent_steps", "0", "1", "--realign", "off", "on",
                           "--max_new_tokens", "2", "--temperature", "0", "--output_dir", str(out)]) == 0
    best = json.loads((out / "best_settings.json").read_text())
    record = best["calibration"]
    assert set(best) == {"latent_steps", "latent_space_realign", "calibration"}
    assert record["dev_slice"]["ids"] == ["gsm8k/1317", "gsm8k/1318"] and record["dev_slice"]["first_index"] == 1317
    assert [(r["latent_steps"], r["latent_space_realign"]) for r in record["sweep"]] == [
        (0, False), (0, True), (1, False), (1, True)]
    chosen = calibrate.choose([dict(r) for r in record["sweep"]])
    assert (best["latent_steps"], best["latent_space_realign"]) == (chosen["latent_steps"], chosen["latent_space_realign"])
    table = (out / "calibration.md").read_text()
    assert table.count("| 0 | off |") == 1 and "**best**" in table and "same run as realign off" in table
    assert (out / "calibration.png").stat().st_size > 5000
    if len({r["accuracy"] for r in record["sweep"]}) == 1:  # the random model solves nothing: say so
        assert "tie-breakers" in record["warning"] and "Warning:" in table
    for name in ("steps0-realign_off", "steps1-realign_off", "steps1-realign_on"):
        assert len((out / name / "predictions.jsonl").read_text().splitlines()) == 2
    assert calibrate.choose([{"accuracy": 0.5, "total_output_tokens": 9, "seconds": 1.0, "k": "a"},
                             {"accuracy": 0.5, "total_output_tokens": 8, "seconds": 9.0, "k": "b"},
                             {"accuracy": 0.25, "total_output_tokens": 1, "seconds": 0.1, "k": "c"}])["k"] == "b"

    # A run started from the file uses its settings, visible in summary.json; the first 3 items miss the slice.
    run_dir = tmp_path / "run"
    capsys.readouterr()
    assert run.main(["--settings_file", str(out / "best_settings.json"), "--model_name", tiny_model_dir,
                     "--data_dir", str(data_dir), "--task", "gsm8k", "--max_samples", "3", "--max_new_tokens", "3",
                     "--temperature", "0", "--generate_bs", "2", "--decode_latents", "2",
                     "--output_dir", str(run_dir)]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    settings = summary["settings"]
    assert settings["settings_file"] == str(out / "best_settings.json")
    assert settings["settings_file_applied"] == {"latent_steps": best["latent_steps"],
                                                 "latent_space_realign": best["latent_space_realign"]}
    assert settings["latent_steps"] == best["latent_steps"]
    assert settings["latent_space_realign"] == best["latent_space_realign"]
    assert settings["calibration_overlap_items"] == 0
    metrics = summary["methods"]["latent_mas"]
    assert metrics["peak_kv_bytes_total"] >= metrics["peak_kv_bytes_per_item"] > 0
    assert metrics["estimated_peak_kv_bytes_total"] == settings["kv_estimate"]["latent_mas"]["bytes_total"]
    records = [json.loads(l) for l in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert settings["decode_latents"] == 2
    if best["latent_steps"]:
        assert all(len(a["latent_tokens"]) == best["latent_steps"] for r in records for a in r["agents"][:3])
        assert capsys.readouterr().out.count("[Latent tokens]") == 9
