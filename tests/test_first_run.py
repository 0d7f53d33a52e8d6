"""What a new user meets (issue 18): --help, bad input caught before the model loads, the latent_steps 0 warning,
and replaying a run from its summary.json. run.py's main runs in this process (no interpreter start per run)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import run
from experiment import run_notes

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if run.py gets as far as loading a model."""
    import models

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad input was caught")

    monkeypatch.setattr(models.ModelWrapper, "from_pretrained", classmethod(refuse))


def cli_error(monkeypatch, capsys, *argv) -> str:
    """run.py's cli on argv: exit code 2 and exactly one line on stderr, which is returned."""
    monkeypatch.setattr(sys, "argv", ["run.py", *map(str, argv)])
    assert run.cli() == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("run.py: error: "), lines
    return lines[0]


def test_help_shows_defaults_choices_and_tasks_without_torch():
    from data import TASKS

    parser = run.build_parser()
    undocumented = [a.option_strings[0] for a in parser._actions if a.option_strings and not a.help]
    assert undocumented == []
    text = " ".join(parser.format_help().split())  # argparse wraps lines: compare with single spaces
    assert "whose probability reaches top_p (ignored when greedy) (default: 0.95)" in text
    assert "(default: [42])" in text and "(default: cuda:1)" in text and "(default: test)" in text
    assert "benchmark: " + ", ".join(TASKS) in text
    assert "{baseline,text_mas,latent_mas}" in text and "{sequential,hierarchical}" in text
    assert "--think the reference's --think" in text  # switches are off by default: no "(default: False)"
    assert "(default: False)" not in text and "(default: None)" not in text
    # Listing the tasks must not pull torch in before the arguments are parsed. (A None entry is an import blocked
    # on purpose: scripts/install.sh --vllm on CPU blocks torchvision, torchaudio and torchcodec.)
    code = ("import sys, run; run.build_parser().format_help(); "
            "print(sorted(m for m, mod in sys.modules.items() if 'torch' in m and mod is not None))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_bad_output_dir_and_flags_fail_before_the_model_loads(tiny_model_dir, data_dir, tmp_path, monkeypatch,
                                                              capsys, no_model_load):
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder")
    base = ["--model_name", tiny_model_dir, "--data_dir", data_dir, "--max_samples", 1]
    assert "is a file, not a folder" in cli_error(monkeypatch, capsys, *base, "--output_dir", a_file)
    assert f"{a_file} is a file, so the folder cannot be created" in cli_error(
        monkeypatch, capsys, *base, "--output_dir", a_file / "run")
    assert "--device 'gpu'" in cli_error(monkeypatch, capsys, *base, "--device", "gpu")
    assert "--text_mas_context_length" in cli_error(monkeypatch, capsys, *base, "--text_mas_context_length", -5)
    assert "--temperature must be a finite number" in cli_error(monkeypatch, capsys, *base, "--temperature", "nan")
    # A name that cannot be resolved offline (the tests set HF_HUB_OFFLINE): seconds, and the models that work.
    message = cli_error(monkeypatch, capsys, *base[2:], "--model_name", "no-such-org/no-such-model",
                        "--output_dir", tmp_path / "x")
    assert "'no-such-org/no-such-model'" in message and "Qwen/Qwen2.5-Coder-0.5B-Instruct" in message


def test_output_dir_that_is_a_file_is_one_line_in_a_real_process(tiny_model_dir, data_dir, tmp_path):
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder")
    proc = subprocess.run([sys.executable, "run.py", "--model_name", tiny_model_dir, "--data_dir", str(data_dir),
                           "--max_samples", "1", "--output_dir", str(a_file)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert [l for l in proc.stderr.splitlines() if l.strip()] == [
        f"run.py: error: --output_dir {a_file} is a file, not a folder; choose a folder for the results"]


def tiny_run(tiny_model_dir, data_dir, *extra, items: int = 2) -> list[str]:
    return ["--model_name", tiny_model_dir, "--data_dir", str(data_dir), "--task", "gsm8k", "--max_samples",
            str(items), "--max_new_tokens", "4", "--temperature", "0", "--quiet", *map(str, extra)]


def test_latent_steps_0_warns_and_the_auto_output_dir_is_recorded(tiny_model_dir, data_dir, tmp_path, monkeypatch,
                                                                  capsys):
    monkeypatch.chdir(tmp_path)  # the automatic folder is outputs/<run> under the working directory
    assert run.main(tiny_run(tiny_model_dir, data_dir, items=1)) == 0  # latent_mas, --latent_steps 0: defaults
    err = capsys.readouterr().err
    assert "warning: latent_mas with --latent_steps 0: the agents before the judger only prefill their prompts" in err
    assert "the paper searched --latent_steps 0, 10, 20, 40, 80" in err
    (folder,) = (tmp_path / "outputs").iterdir()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["settings"]["output_dir"] == str(Path("outputs") / folder.name)
    for quiet in (["--latent_steps", "10"], ["--method", "text_mas"]):  # latent thoughts, or no latent_mas: no warning
        assert not any("--latent_steps 0" in note for note in run_notes(run.parse_args(quiet), 10, False))


# Settings that differ between a run and its replay by design: where it was written and where it came from.
PROVENANCE = {"output_dir", "settings_file", "settings_file_applied", "settings_file_overridden",
              "calibration_overlap_items"}


def test_replay_from_summary_records_the_same_settings_and_greedy_outputs(tiny_model_dir, data_dir, tmp_path,
                                                                          capsys):
    first, replay = tmp_path / "first", tmp_path / "replay"
    argv = tiny_run(tiny_model_dir, data_dir, "--method", "text_mas", "latent_mas", "--latent_steps", 2,
                    "--prompt", "hierarchical", "--seed", 7, "--output_dir", first)
    assert run.main(argv) == 0
    original = json.loads((first / "summary.json").read_text())
    assert original["command"] == ["run.py", *argv] and original["settings"]["output_dir"] == str(first)
    capsys.readouterr()

    # Only the output folder is given: everything else comes from the summary ("settings"), not from defaults.
    assert run.main(["--settings_file", str(first / "summary.json"), "--output_dir", str(replay), "--quiet"]) == 0
    assert "not replayed" not in capsys.readouterr().err  # every recorded key was a flag or a known record
    again = json.loads((replay / "summary.json").read_text())
    same = lambda settings: {k: v for k, v in settings.items() if k not in PROVENANCE}
    assert same(again["settings"]) == same(original["settings"])
    assert again["settings"]["settings_file_applied"]["latent_steps"] == 2
    texts = lambda folder: [(r["method"], r["index"], r["final_text"]) for r in
                            map(json.loads, (folder / "predictions.jsonl").read_text().splitlines())]
    assert texts(replay) == texts(first)

    # Flags on the command line still win; keys that are no longer flags are skipped with a note.
    changed = json.loads((first / "summary.json").read_text())
    changed["settings"]["renamed_flag"] = True
    (tmp_path / "changed.json").write_text(json.dumps(changed))
    args = run.parse_args(["--settings_file", str(tmp_path / "changed.json"), "--latent_steps", "5"])
    assert (args.latent_steps, args.prompt, args.seed) == (5, "hierarchical", [7])
    assert args.method == ["text_mas", "latent_mas"]
    assert args.output_dir is None and args.settings_file_overridden == ["latent_steps"]
    assert "not replayed: renamed_flag" in capsys.readouterr().err


@pytest.mark.parametrize("argv,code", [(["--help"], 0), (["--latent_steps", "x"], 2), (["--bogus"], 2),
                                       (["--think", "--disable_thinking"], 2)])
def test_help_and_argument_errors_need_no_torch(argv, code):
    """On a machine without torch (its import made to fail), --help answers and bad flags get one line, exit 2."""
    script = f"import sys; sys.modules['torch'] = None; sys.argv = ['run.py', *{argv!r}]; import run; sys.exit(run.cli())"
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    if code:
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("run.py: error: ")


def test_scripts_take_run_flags_from_the_shared_declaration():
    """No script re-declares a flag of run.py under its own default or help: they add them through flags.add_flags
    (calibrate.py's --latent_steps is a list of values to sweep, its own flag)."""
    import re

    from flags import FLAGS, VLLM_FLAGS

    shared = set(FLAGS) | set(VLLM_FLAGS)
    for script in sorted((ROOT / "scripts").glob("*.py")):
        declared = set(re.findall(r"add_argument\(\s*\"--(\w+)\"", script.read_text()))
        own = {"latent_steps"} if script.name == "calibrate.py" else set()
        assert declared & shared <= own, (script.name, sorted(declared & shared - own))


@pytest.mark.parametrize("name,topology,hierarchy,agents", [
    ("baseline", "sequential", "chain", ["single"]),
    ("text_mas", "sequential", "chain", ["planner", "critic", "refiner", "judger"]),
    ("latent_mas", "sequential", "chain", ["planner", "critic", "refiner", "judger"]),
    ("latent_mas", "hierarchical", "parallel", ["math+science+code", "summarizer"])])
def test_progress_moves_inside_a_batch_for_every_agent(make_tiny_wrapper, name, topology, hierarchy, agents):
    """Inside one batch the progress line names each agent in turn and counts its steps up to the budget."""
    from methods import METHODS, MethodSettings
    from prompts import PromptBook

    settings = MethodSettings(max_new_tokens=3, temperature=0.0, latent_steps=2, topology=topology,
                              hierarchy=hierarchy)
    method = METHODS[name](make_tiny_wrapper(), settings, PromptBook.load())
    lines = []
    method.progress = lines.append
    method.run_batch([{"question": "What is 2 + 3?"}, {"question": "Name a prime number."}], "number")
    announced = [line.split(":")[0] for line in lines if line.endswith(("latent steps", "tokens"))]
    assert announced == agents
    for agent in agents:  # each agent's steps are counted: latent steps up to m, tokens up to where decoding ended
        counts = [tuple(map(int, m.groups())) for line in lines
                  if (m := re.match(rf"{re.escape(agent)}: (?:latent steps|tokens) (\d+)/(\d+), ~\d+s left", line))]
        assert counts and counts[-1][0] >= 1 and counts[-1][1] == (3 if agent in ("single", "judger", "summarizer")
                                                                   or name == "text_mas" else 2), (agent, lines)
        if name == "latent_mas" and agent not in ("judger", "summarizer"):
            assert counts[-1] == (2, 2)
