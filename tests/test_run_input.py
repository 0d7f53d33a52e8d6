"""What a new user meets, round 2 (issue 24): silent acceptances refused or warned about in one line, SIGTERM handled
as Ctrl-C, one-line errors after the default-model note, the seed on the progress bar, the sweep's --help."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import run
from errors import UsageError
from flags import RESULT_KEYS
from test_first_run import cli_error  # run.py's cli: exit 2 and one line, returned

ROOT = Path(__file__).resolve().parents[1]


class Loaded(Exception):
    """Raised where the model would load: every check and note came before it."""


@pytest.fixture
def stop_at_load(monkeypatch):
    import models

    def refuse(*args, **kwargs):
        raise Loaded

    monkeypatch.setattr(models.ModelWrapper, "from_pretrained", classmethod(refuse))


def test_contradicting_ablations_are_refused(monkeypatch, capsys):
    assert "pick one" in cli_error(monkeypatch, capsys, "--latent_only", "--sequential_info_only")


def test_prompt_file_without_the_question_is_refused(monkeypatch, capsys, tmp_path, data_dir, stop_at_load):
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps({"judger": "Answer well.\n\n{answer_format}"}))
    message = cli_error(monkeypatch, capsys, "--prompt_file", path, "--data_dir", data_dir, "--max_samples", 1,
                        "--output_dir", tmp_path / "out")
    assert "'judger' has no {question}" in message


def test_no_model_name_note_does_not_come_before_an_error(monkeypatch, capsys, tmp_path, data_dir):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert "is a file" in cli_error(monkeypatch, capsys, "--data_dir", data_dir, "--output_dir", a_file)


def warnings_before_load(capsys, *argv) -> list[str]:
    with pytest.raises(Loaded):
        run.main([*map(str, argv)])
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]


def test_decode_latents_without_latent_mas_warns(capsys, tmp_path, data_dir, tiny_model_dir, stop_at_load):
    lines = warnings_before_load(capsys, "--model_name", tiny_model_dir, "--data_dir", data_dir, "--max_samples", 1,
                                 "--method", "baseline", "--decode_latents", 3, "--output_dir", tmp_path / "o")
    assert lines == ["warning: --decode_latents applies to latent_mas only, which this run does not include "
                     "(--method baseline): nothing is decoded"]


def test_max_samples_beyond_the_split_warns(capsys, tmp_path, data_dir, tiny_model_dir, stop_at_load):
    lines = warnings_before_load(capsys, "--model_name", tiny_model_dir, "--data_dir", data_dir, "--task",
                                 "aime2024", "--max_samples", 1000, "--method", "baseline", "--output_dir", tmp_path / "o")
    assert lines == ["warning: --max_samples 1000: aime2024 test has 30 items; running all 30"]


def test_several_seeds_name_the_seed_on_the_progress_bar(capsys, tmp_path, data_dir, tiny_model_dir):
    assert run.main(["--model_name", tiny_model_dir, "--data_dir", str(data_dir), "--max_samples", "1",
                     "--method", "baseline", "--max_new_tokens", "3", "--seed", "1", "2", "--quiet",
                     "--output_dir", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "baseline seed 1" in err and "baseline seed 2" in err


def test_sigterm_is_handled_like_ctrl_c(tmp_path, data_dir, tiny_model_dir):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "run.py", "--model_name", tiny_model_dir, "--data_dir", str(data_dir),
                             "--max_samples", "40", "--generate_bs", "1", "--method", "baseline",
                             "--max_new_tokens", "4", "--temperature", "0", "--quiet", "--output_dir", str(out)],
                            cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    predictions = out / "predictions.jsonl"
    deadline = time.time() + 240
    while not (predictions.exists() and predictions.read_text().count("\n") >= 1) and time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 143 and "Traceback" not in err
    assert f"terminated: finished items are in {out}; rerun with --resume --output_dir {out}" in err
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"


def test_sigterm_while_the_model_loads_is_one_line(tmp_path, data_dir):
    proc = subprocess.Popen([sys.executable, "-c", "import signal, os, run, models, sys\n"
                             "models.ModelWrapper.from_pretrained = classmethod(lambda *a, **k: os.kill(os.getpid(), "
                             "signal.SIGTERM))\nsys.argv = ['run.py', '--data_dir', sys.argv[1], '--output_dir', "
                             "sys.argv[2], '--max_samples', '1']\nsys.exit(run.cli())",
                             str(data_dir), str(tmp_path / "o")], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    err = proc.communicate(timeout=300)[1]
    assert proc.returncode == 143 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "run.py: terminated before the first item; nothing to resume"


def test_sweep_help_shows_its_own_choices():
    sys.path.insert(0, str(ROOT / "scripts"))
    import sweep

    text = " ".join(sweep.build_parser().format_help().split())
    assert "--output_dir OUTPUT_DIR the sweep folder: runs/<cell>, logs/<cell>.log, report/ --" in text
    assert "paper's search over 0, 10, 20, 40, 80) (default: 40)" in text


def test_replaying_an_old_summary_keeps_its_topology(tmp_path):
    """example_logs' hierarchical run recorded the old --chain_specialists false: independent specialists."""
    old = ROOT / "example_logs" / "gsm8k-hierarchical-qwen2.5-coder-0.5b" / "summary.json"
    assert run.parse_args(["--settings_file", str(old)]).hierarchy == "parallel"
    sequential = ROOT / "example_logs" / "gsm8k-sequential-qwen2.5-coder-0.5b" / "summary.json"
    assert run.parse_args(["--settings_file", str(sequential)]).hierarchy == "chain"
    both = tmp_path / "both.json"
    both.write_text(json.dumps({"prompt": "hierarchical", "chain_specialists": True, "hierarchy": "parallel"}))
    with pytest.raises(UsageError, match="contradicts 'hierarchy'"):
        run.parse_args(["--settings_file", str(both)])


def test_resume_needs_only_the_folder_and_adds_a_method(tmp_path, data_dir, tiny_model_dir, monkeypatch, capsys):
    out = tmp_path / "run"
    assert run.main(["--model_name", tiny_model_dir, "--data_dir", str(data_dir), "--max_samples", "2",
                     "--method", "baseline", "--max_new_tokens", "3", "--temperature", "0", "--quiet",
                     "--output_dir", str(out)]) == 0
    first = json.loads((out / "summary.json").read_text())
    assert run.main(["--resume", "--output_dir", str(out)]) == 0  # the hint printed after Ctrl-C, as printed
    again = json.loads((out / "summary.json").read_text())
    assert {k: again["settings"].get(k) for k in RESULT_KEYS} == {k: first["settings"].get(k) for k in RESULT_KEYS}
    assert again["methods"]["baseline"]["n"] == 2
    assert run.main(["--resume", "--output_dir", str(out), "--method", "text_mas"]) == 0
    added = json.loads((out / "summary.json").read_text())
    assert added["settings"]["method"] == ["baseline", "text_mas"] and set(added["methods"]) == {"baseline", "text_mas"}
    assert added["methods"]["baseline"] == again["methods"]["baseline"] | {
        k: added["methods"]["baseline"][k] for k in ("seconds", "seconds_per_item", "wall_seconds_this_process",
                                                     "peak_memory")}
    capsys.readouterr()
    assert "max_new_tokens=3, now 5" in cli_error(monkeypatch, capsys, "--resume", "--output_dir", out,
                                                  "--max_new_tokens", 5)
