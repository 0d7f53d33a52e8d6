"""Every result-changing setting (flags.py's `result` marks) reaches the computation: for each, a probe on the tiny
varied model shows that a non-default value changes what the run computes, in the direction the setting means.
The list of result-changing settings drives the probes, --resume's check and report.py's row keys: a setting
marked `result` without a probe here fails test_every_result_setting_has_a_probe."""

import json

import pytest
import torch

import flags
import report
from methods import METHODS, MethodSettings
from prompts import PromptBook

ITEMS = [{"id": "a", "question": "What is 2 + 3?"},
         {"id": "b", "question": "Tom has 7 apples and eats two of them. How many are left?"}]
GREEDY = dict(max_new_tokens=4, temperature=0.0)
SAMPLED = dict(max_new_tokens=6, temperature=1.0, top_p=1.0, top_k=0)


def outputs(wrapper, method: str = "baseline", prompts: PromptBook | None = None, answer_kind: str = "number",
            **settings):
    """(item outputs, the method) of one batch of ITEMS."""
    m = METHODS[method](wrapper, MethodSettings(**{**GREEDY, **settings}), prompts or PromptBook.load())
    return m.run_batch(ITEMS, answer_kind), m


def texts(wrapper, **settings) -> list[str]:
    return [o.final_text for o in outputs(wrapper, **settings)[0]]


def kv_bytes(wrapper, **settings) -> int:
    """The largest KV cache the batch held."""
    _, method = outputs(wrapper, "latent_mas", **settings)
    return method.kv_peak["bytes"]


# Each probe(make_tiny_wrapper, tmp_path) asserts the direction of its setting. Settings read at the method level go
# through MethodSettings as run.py builds it; the others through what run.py builds from them (the wrapper's
# realignment and rendering, the prompt book, the task's answer format, the model's dtype).

def probe_max_new_tokens(make, tmp_path):
    wrapper = make()
    short, long = outputs(wrapper, max_new_tokens=2)[0], outputs(wrapper, max_new_tokens=8)[0]
    assert max(o.output_tokens for o in short) <= 2 < max(o.output_tokens for o in long)


def probe_latent_steps(make, tmp_path):
    wrapper = make()
    (none, _), (three, _) = outputs(wrapper, "latent_mas"), outputs(wrapper, "latent_mas", latent_steps=3)
    assert [a.latent_steps for a in three[0].agents[:-1]] == [3, 3, 3]
    assert kv_bytes(wrapper, latent_steps=3) > kv_bytes(wrapper)  # more thoughts, more memory for the judger


def probe_temperature(make, tmp_path):
    """Greedy gives the same text under every seed; sampling differs between seeds."""
    wrapper = make()
    assert texts(wrapper, seed=1) == texts(wrapper, seed=2)
    assert texts(wrapper, **SAMPLED, seed=1) != texts(wrapper, **SAMPLED, seed=2)


def probe_seed(make, tmp_path):
    wrapper = make()
    assert texts(wrapper, **SAMPLED, seed=1) == texts(wrapper, **SAMPLED, seed=1)
    assert texts(wrapper, **SAMPLED, seed=1) != texts(wrapper, **SAMPLED, seed=3)


def probe_top_p(make, tmp_path):
    """A tiny nucleus keeps only the most likely token: the greedy text; the whole distribution does not."""
    wrapper = make()
    greedy = texts(wrapper, max_new_tokens=6)
    assert texts(wrapper, **{**SAMPLED, "top_p": 1e-9}) == greedy != texts(wrapper, **SAMPLED)


def probe_top_k(make, tmp_path):
    wrapper = make()
    greedy = texts(wrapper, max_new_tokens=6)
    assert texts(wrapper, **{**SAMPLED, "top_k": 1}) == greedy != texts(wrapper, **SAMPLED)


def probe_think(make, tmp_path):
    wrapper = make()
    plain, think = outputs(wrapper, "latent_mas")[0], outputs(wrapper, "latent_mas", think=True)[0]
    assert all(a.input.endswith("<think>") for a in think[0].agents)
    assert not any(a.input.endswith("<think>") for a in plain[0].agents)


def probe_disable_thinking(make, tmp_path):
    """--disable_thinking renders the non-thinking mode (Qwen3: an empty think block) for every agent."""
    off = make(enable_thinking=flags.enable_thinking(flags.parse_args(["--disable_thinking"])))
    default = make(enable_thinking=flags.enable_thinking(flags.parse_args([])))
    assert "<think>\n\n</think>" in outputs(off)[0][0].agents[0].input
    assert "<think>\n\n</think>" not in outputs(default)[0][0].agents[0].input


def probe_latent_space_realign(make, tmp_path):
    identity, _ = make().realignment()
    ridge, _ = make(latent_space_realign=True).realignment()
    assert torch.equal(identity, torch.eye(identity.shape[0])) and not torch.allclose(ridge, identity, atol=1e-3)


def probe_realign_lambda(make, tmp_path):
    """A larger ridge penalty shrinks the realignment matrix towards zero."""
    default, _ = make(latent_space_realign=True).realignment()
    strong, _ = make(latent_space_realign=True, realign_lambda=1e6).realignment()  # the Gram diagonal: ~1e4
    assert strong.norm() < 0.5 * default.norm()


def probe_latent_only(make, tmp_path):
    wrapper = make()
    assert kv_bytes(wrapper, latent_steps=2, latent_only=True) < kv_bytes(wrapper, latent_steps=2)


def probe_sequential_info_only(make, tmp_path):
    wrapper = make()
    assert kv_bytes(wrapper, latent_steps=2, sequential_info_only=True) < kv_bytes(wrapper, latent_steps=2)


def probe_prompt(make, tmp_path):
    wrapper = make()
    roles = lambda topology: [a.role for a in outputs(wrapper, "text_mas", topology=topology)[0][0].agents]
    assert roles("sequential") == ["planner", "critic", "refiner", "judger"]
    assert roles("hierarchical") == ["math", "science", "code", "summarizer"]


def probe_hierarchy(make, tmp_path):
    """chain: each specialist reads the one before; parallel: they read nothing, only the summarizer reads all."""
    wrapper = make()
    inputs = lambda hierarchy: [a.input for a in outputs(wrapper, "text_mas", topology="hierarchical",
                                                         hierarchy=hierarchy)[0][0].agents]
    chain, parallel = inputs("chain"), inputs("parallel")
    assert "[Math]" in chain[1] and "[Math]" not in parallel[1] and "[Math]" in parallel[3]


def probe_text_mas_context_length(make, tmp_path):
    """A limit keeps only the most recent tokens of the earlier work: the judger reads the end of it."""
    wrapper = make()
    full = outputs(wrapper, "text_mas", max_new_tokens=6)[0][0].agents
    cut = outputs(wrapper, "text_mas", max_new_tokens=6, text_mas_context_length=5)[0][0].agents
    assert len(cut[-1].input) < len(full[-1].input)
    # The judger reads the end of the refiner's output, and not the planner's header at the start of the work.
    assert cut[2].output.strip()[-3:] in cut[-1].input
    assert "[Planner]" not in cut[-1].input and "[Planner]" in full[-1].input


def probe_system_prompt(make, tmp_path):
    wrapper = make()
    line = "You are a careful accountant."
    assert line in outputs(wrapper, prompts=PromptBook.load(None, line))[0][0].agents[0].input
    assert line not in outputs(wrapper)[0][0].agents[0].input


def probe_prompt_file(make, tmp_path):
    wrapper = make()
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps({"single": "Answer the riddle: {question}"}))
    assert "Answer the riddle:" in outputs(wrapper, prompts=PromptBook.load(str(path)))[0][0].agents[0].input
    assert "Answer the riddle:" not in outputs(wrapper)[0][0].agents[0].input


def probe_task(make, tmp_path):
    """A task's answer kind picks the answer format the agents are asked for."""
    from data import get_task

    wrapper = make()
    asked = lambda task: outputs(wrapper, answer_kind=get_task(task).answer_kind)[0][0].agents[0].input
    assert asked("gsm8k") != asked("arc_challenge")


def probe_dtype(make, tmp_path):
    from models import ModelWrapper

    wrapper = make()
    wrapper.model.save_pretrained(tmp_path / "m")
    wrapper.tokenizer.save_pretrained(tmp_path / "m")
    load = lambda dtype: ModelWrapper.from_pretrained(str(tmp_path / "m"), device="cpu", dtype=dtype).model.dtype
    assert (load(flags.default("dtype")), load("bfloat16")) == (torch.float32, torch.bfloat16)


def probe_score_whole_text(make, tmp_path):
    """The tiny model's outputs cut at the budget: the reference's rule credits them from their last number, the
    default never (run_method scores them as run.py does)."""
    from data import get_task
    from methods.runner import run_method

    wrapper = make()
    method = METHODS["baseline"](wrapper, MethodSettings(**{**GREEDY, "max_new_tokens": 3}), PromptBook.load())
    items = [{**item, "gold": "5"} for item in ITEMS]
    scored = {whole: run_method(method, get_task("gsm8k"), items, set(), tmp_path / f"{whole}.jsonl", 2, trace=False,
                                whole_text=whole) for whole in (False, True)}
    assert all(r["cut_at_budget"] for r in scored[False])
    assert {r["extraction_rule"] for r in scored[False]} == {"cut_before_answer"}
    assert {r["extraction_rule"] for r in scored[True]} <= {"last_number", "none"}


PROBES = {name[len("probe_"):]: f for name, f in globals().items() if name.startswith("probe_")}
# Result-changing settings without a probe here, and why: each is one entry, so a new result setting must be
# probed or named here on purpose.
NOT_PROBED = {
    "model_name": "which weights load; the loading is tested in tests/test_model_store.py",
    "split": "the local data holds only the test split",
    "use_vllm": "starts a vLLM engine; tests/test_vllm_backend.py runs both backends on the same items",
    "vllm_judger_layout": "with vLLM; tests/test_vllm_backend.py shows kv equals the HF hand-off and reference differs",
}


def test_every_result_setting_has_a_probe():
    assert set(PROBES) | set(NOT_PROBED) == set(flags.RESULT_SCOPES), "probe every result-changing setting"
    assert not set(PROBES) & set(NOT_PROBED)


@pytest.mark.parametrize("name", sorted(PROBES))
def test_result_setting_changes_the_run(name, make_tiny_wrapper, tmp_path):
    PROBES[name](make_tiny_wrapper, tmp_path)


def test_every_result_setting_is_checked_by_resume_and_keeps_report_rows_apart():
    """--resume (differing_setting) and report.py's rows compare every result-changing setting's record."""
    report_keys = {*report.ROW_KEYS, *report.COMPARABLE_KEYS, *report.MAS_KEYS,
                   *(k for keys in report.METHOD_KEYS.values() for k in keys)}
    for key in flags.RESULT_KEYS:
        assert flags.differing_setting({key: 1}, {key: 2}) is not None, f"--resume ignores {key}"
        assert key in report_keys, f"report.py would merge runs that differ in {key}"


def test_report_keeps_runs_that_differ_only_in_backend_apart(tmp_path):
    def run(name: str, use_vllm: bool):
        folder = tmp_path / name
        folder.mkdir()
        metrics = {"n": 2, "correct": 1, "accuracy": 0.5, "total_output_tokens": 10, "judger_output_tokens": 10,
                   "avg_output_tokens": 5.0, "seconds": 1.0, "seconds_per_item": 0.5}
        settings = {"task": "gsm8k", "prompt": "sequential", "model_name": "m", "latent_steps": 0, "split": "test",
                    "use_vllm": use_vllm}
        (folder / "summary.json").write_text(json.dumps({"settings": settings, "status": "finished",
                                                         "methods": {"text_mas": metrics, "latent_mas": metrics}}))
        return report.load_run(folder)

    rows = report.build_rows([run("hf", False), run("vllm", True)])
    assert len(rows) == 2


def test_the_api_and_the_methods_take_the_cli_defaults():
    """One default per setting: the Python API's and the methods' are flags.py's (the API's latent_steps was 10
    where the CLI's is 0)."""
    import dataclasses
    import inspect

    from latentmas import LatentMAS

    api = {**inspect.signature(LatentMAS).parameters, **inspect.signature(LatentMAS.generate).parameters}
    for name in ("latent_steps", "latent_space_realign", "realign_lambda", "think", "disable_thinking", "hierarchy",
                 "latent_only", "sequential_info_only", "temperature", "top_p", "top_k"):
        assert api[name].default == flags.default(name), name
    assert api["seed"].default == flags.default("seed")[0]
    fields = {f.name: f.default for f in dataclasses.fields(MethodSettings)}
    for name, value in fields.items():
        flag = {"topology": "prompt"}.get(name, name)
        if name not in ("max_new_tokens", "seed"):
            assert value == flags.default(flag), name
