"""The paper's experimental setting: chat rendering and thinking mode, the merged sampling configuration,
per-item random streams and realignment over the tokenizer's real rows.

The model here is the suite's tiny random Qwen3 (tests/tiny_model.py), saved with the real Qwen3
tokenizer and a Qwen3-like generation_config.json, so that its outputs differ from prompt to prompt (a test that
compares texts on a model that writes the same text for every prompt proves nothing; `assert_varied` checks it).
"""

import json

import pytest
import torch

from methods import METHODS, MethodSettings
from prompts import PromptBook

from test_cli import lines, one_line_error, run_cli

QWEN3_GENERATION = dict(do_sample=True, temperature=0.6, top_p=0.95, top_k=20, eos_token_id=[151645, 151643],
                        pad_token_id=151643)
QUESTIONS = ["What is 2 + 3?", "Tom has 7 apples and eats two. How many are left?",
             "A train travels 60 km in 1.5 hours. What is its speed?", "Name the largest planet."]
ITEMS = [{"id": f"q{i}", "question": q, "gold": "5"} for i, q in enumerate(QUESTIONS)]
THINK_OFF_BLOCK = "<|im_start|>assistant\n<think>\n\n</think>\n\n"


def varied_qwen3(tokenizer, generation: dict | None = None):
    """The suite's tiny Qwen3 (tests/tiny_model.py: untied, prompt-dependent outputs) with a generation config."""
    from transformers import GenerationConfig

    import tiny_model

    model = tiny_model.build(tokenizer)
    model.generation_config = GenerationConfig(**(QWEN3_GENERATION if generation is None else generation))
    return model


def save_model(path, tokenizer, generation: dict | None = None) -> str:
    varied_qwen3(tokenizer, generation=generation).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def varied_dir(tmp_path_factory, qwen3_tokenizer) -> str:
    return save_model(tmp_path_factory.mktemp("varied-qwen3"), qwen3_tokenizer)


@pytest.fixture
def wrapper(make_tiny_wrapper):
    """The suite's tiny model (varied outputs, tests/tiny_model.py) with the Qwen3 checkpoints' generation config."""
    from transformers import GenerationConfig

    wrapper = make_tiny_wrapper()
    wrapper.model.generation_config = GenerationConfig(**QWEN3_GENERATION)
    return wrapper


def assert_varied(texts):
    assert all(t.strip() for t in texts), f"empty or whitespace-only outputs: {texts}"
    assert len(set(texts)) > 1, f"the model wrote the same text for every prompt: {texts}"


def run(wrapper, name, items=ITEMS, **kw):
    settings = MethodSettings(**{"max_new_tokens": 4, "temperature": 0.0, **kw})
    return METHODS[name](wrapper, settings, PromptBook.load()).run_batch(items, "number")


CASES = [("baseline", "sequential", "chain"), ("text_mas", "sequential", "chain"), ("latent_mas", "sequential", "chain"),
         ("text_mas", "hierarchical", "chain"), ("latent_mas", "hierarchical", "chain"),
         ("text_mas", "hierarchical", "parallel"), ("latent_mas", "hierarchical", "parallel")]


# ------------------------------------------------------------------------------------------------------ rendering

@pytest.mark.parametrize("name,topology,hierarchy", CASES)
def test_default_prompts_are_the_templates_own_rendering(wrapper, qwen3_tokenizer, name, topology, hierarchy):
    """Every agent's prompt is what the chat template renders with no extra argument (Qwen3: thinking mode, no
    empty think block); agents whose prompt has no earlier text are compared with the template byte for byte."""
    book = PromptBook.load()
    outs = run(wrapper, name, ITEMS[:2], topology=topology, hierarchy=hierarchy, latent_steps=1)
    for item, out in zip(ITEMS, outs):
        for k, agent in enumerate(out.agents):
            assert agent.input.endswith("<|im_end|>\n<|im_start|>assistant\n") and "<think>" not in agent.input
            if name == "text_mas" and "Here is the work" in agent.input:
                continue  # earlier outputs pasted in: the template's structure is checked above
            latent = name == "latent_mas" and (k > 0 and not (hierarchy == "parallel" and k < len(out.agents) - 1))
            messages = book.messages(agent.role, item["question"], "number", None, latent)
            assert agent.input == qwen3_tokenizer.apply_chat_template(messages, tokenize=False,
                                                                      add_generation_prompt=True)


@pytest.mark.parametrize("name,topology,hierarchy", CASES)
def test_think_adds_exactly_the_think_token_to_latent_mas_agents(wrapper, name, topology, hierarchy):
    kw = dict(topology=topology, hierarchy=hierarchy, latent_steps=1)
    plain = [a.input for o in run(wrapper, name, ITEMS[:2], **kw) for a in o.agents]
    think = [a.input for o in run(wrapper, name, ITEMS[:2], think=True, **kw) for a in o.agents]
    if name == "latent_mas":
        assert think == [p + "<think>" for p in plain]
        assert all(p.endswith("<|im_start|>assistant\n<think>") for p in think)
    else:
        assert think == plain  # the reference's --think is a latent_mas flag


@pytest.mark.parametrize("name,topology,hierarchy", CASES)
def test_disable_thinking_gives_the_empty_think_block_everywhere(make_tiny_wrapper, name, topology, hierarchy):
    outs = run(make_tiny_wrapper(enable_thinking=False), name, ITEMS[:2], topology=topology, hierarchy=hierarchy, latent_steps=1)
    assert all(a.input.endswith(THINK_OFF_BLOCK) for o in outs for a in o.agents)


def test_cli_records_and_checks_the_thinking_and_sampling_settings(varied_dir, data_dir, tmp_path):
    out = tmp_path / "run"
    base = ["--method", "baseline", "--model_name", varied_dir, "--data_dir", data_dir, "--task", "gsm8k",
            "--max_samples", 2, "--max_new_tokens", 3, "--output_dir", out, "--quiet"]
    run_cli(*base, "--disable_thinking")
    summary = json.loads((out / "summary.json").read_text())["settings"]
    assert summary["disable_thinking"] is True and summary["think"] is False and summary["hierarchy"] == "chain"
    # The model's top_k 20 stays; the CLI's temperature and top-p go over the model's values.
    assert summary["sampling"]["top_k"] == 20 and summary["sampling"]["do_sample"] is True
    assert (summary["sampling"]["temperature"], summary["sampling"]["top_p"]) == (0.6, 0.95)
    assert all(a["input"].endswith(THINK_OFF_BLOCK) for r in lines(out) for a in r["agents"])
    # A resume takes the folder's recorded settings (issue 24): --disable_thinking stays on without being repeated,
    # and a flag given with another value is refused.
    run_cli(*base, "--resume")
    assert json.loads((out / "summary.json").read_text())["settings"]["disable_thinking"] is True
    assert "temperature=0.6, now 0.0" in one_line_error(run_cli(*base, "--resume", "--temperature", "0", check=False))
    assert "contradict" in one_line_error(run_cli(*base, "--think", "--disable_thinking", check=False))
    assert "--top_k" in one_line_error(run_cli(*base, "--top_k", "-1", check=False))


# ------------------------------------------------------------------------------------------------------ sampling

def test_sampling_config_merges_flags_over_the_generation_config(qwen3_tokenizer):
    from transformers.generation.logits_process import MinPLogitsWarper, TopKLogitsWarper

    from models import ModelWrapper

    model = varied_qwen3(qwen3_tokenizer, generation={**QWEN3_GENERATION, "min_p": 0.05, "top_p": 0.8})
    w = ModelWrapper(model, qwen3_tokenizer)
    merged = w.sampling_config(0.7, 0.95)
    assert (merged.do_sample, merged.temperature, merged.top_p, merged.top_k, merged.min_p) == (True, 0.7, 0.95, 20,
                                                                                                0.05)
    assert w.sampling_config(0.7, 0.95, top_k=5).top_k == 5
    assert not w.sampling_config(0).do_sample
    kinds = {type(p) for p in w.logits_processors(merged, 0, None, "cpu")}
    assert {TopKLogitsWarper, MinPLogitsWarper} <= kinds
    # Without a top_k in the model's config, generate's own default (50) applies, as in the reference's HF path.
    bare = ModelWrapper(varied_qwen3(qwen3_tokenizer, generation={"eos_token_id": 151645}), qwen3_tokenizer)
    assert bare.sampling_config(0.6, 0.95).top_k == 50


def test_generation_config_top_k_1_samples_the_greedy_text(qwen3_tokenizer, data_dir, tmp_path):
    """A model folder whose generation_config.json says top_k 1, loaded as run.py loads it: sampling at T = 1 gives
    exactly its greedy tokens; with the model's top_k 20 instead, sampling at T = 1 does not (the check can fail)."""
    from data import load_task
    from models import ModelWrapper

    items = load_task("gsm8k", data_dir=str(data_dir), max_samples=3)
    tokens = {}
    for top_k in (1, 20):
        folder = save_model(tmp_path / f"k{top_k}", qwen3_tokenizer, {**QWEN3_GENERATION, "top_k": top_k})
        model = ModelWrapper.from_pretrained(folder, device="cpu")
        for temperature in (1, 0):
            settings = MethodSettings(max_new_tokens=12, temperature=temperature, top_p=1.0)
            method = METHODS["baseline"](model, settings, PromptBook.load())
            prompts = method.render("single", items, "number")
            tokens[top_k, temperature] = method.generate(prompts, method.streams(items, ["single"])).token_ids
    assert len({tuple(ids) for ids in tokens[1, 0]}) == 3, "the greedy rows must differ"
    assert tokens[1, 1] == tokens[1, 0]
    assert tokens[20, 1] != tokens[20, 0]


@pytest.mark.parametrize("name,topology,hierarchy", CASES)
def test_sampled_outputs_do_not_depend_on_batching(wrapper, name, topology, hierarchy):
    """T 0.6, fixed seed: each item draws from its own streams (seed, item id, agent), so an item's outputs are the
    same in a batch of 4, alone, and in another order; another seed gives other outputs."""
    kw = dict(topology=topology, hierarchy=hierarchy, latent_steps=2, temperature=0.6, max_new_tokens=6)
    agents = lambda outs: [[a.output for a in o.agents] for o in outs]
    batched = agents(run(wrapper, name, ITEMS, **kw))
    alone = [agents(run(wrapper, name, [item], **kw))[0] for item in ITEMS]
    reversed_order = agents(run(wrapper, name, ITEMS[::-1], **kw))[::-1]
    assert batched == alone == reversed_order
    assert_varied([texts[-1] for texts in batched])
    assert agents(run(wrapper, name, ITEMS, seed=7, **kw)) != batched


def test_methods_sharing_a_process_do_not_change_each_others_draws(wrapper):
    kw = dict(latent_steps=2, temperature=0.6, max_new_tokens=6)
    alone = [o.final_text for o in run(wrapper, "latent_mas", ITEMS, **kw)]
    run(wrapper, "baseline", ITEMS, **kw)
    run(wrapper, "text_mas", ITEMS, **kw)
    assert [o.final_text for o in run(wrapper, "latent_mas", ITEMS, **kw)] == alone


def test_sampled_cli_runs_agree_across_batch_sizes_and_a_resume(varied_dir, data_dir, tmp_path):
    base = ["--method", "baseline", "text_mas", "latent_mas", "--latent_steps", 2, "--model_name", varied_dir,
            "--data_dir", data_dir, "--task", "gsm8k", "--max_new_tokens", 6, "--temperature", 0.6, "--quiet"]
    finals = lambda out: {(r["method"], r["index"]): r["final_text"] for r in lines(out)}
    run_cli(*base, "--max_samples", 4, "--generate_bs", 4, "--output_dir", tmp_path / "bs4")
    # A run of the first item alone, continued with --resume to 4 items in batches of 3 (other batches, other
    # neighbours, another process); test_sampled_outputs_do_not_depend_on_batching covers batch size 1 in-process.
    run_cli(*base, "--max_samples", 1, "--generate_bs", 1, "--output_dir", tmp_path / "resumed")
    run_cli(*base, "--max_samples", 4, "--generate_bs", 3, "--output_dir", tmp_path / "resumed", "--resume")
    want = finals(tmp_path / "bs4")
    assert len(want) == 12 and finals(tmp_path / "resumed") == want
    assert_varied([text for (method, _), text in want.items() if method == "latent_mas"])


# --------------------------------------------------------------------------------------------------- realignment

@pytest.mark.parametrize("realign", [False, True])
def test_padded_embedding_rows_do_not_move_the_realignment(qwen3_tokenizer, realign):
    """Rows past len(tokenizer) (151,669 of 151,936) were never trained: scaling them up changes neither W_a nor the
    norm target."""
    from models import ModelWrapper

    rows = len(qwen3_tokenizer)
    model = varied_qwen3(qwen3_tokenizer)
    assert model.get_input_embeddings().weight.shape[0] > rows
    before = ModelWrapper(model, qwen3_tokenizer, latent_space_realign=realign).realignment()
    with torch.no_grad():
        model.get_input_embeddings().weight[rows:] *= 1000.0
        model.get_output_embeddings().weight[rows:] *= 1000.0
    after = ModelWrapper(model, qwen3_tokenizer, latent_space_realign=realign).realignment()
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])
    # The norm target is the mean over the real rows only.
    real = model.get_input_embeddings().weight[:rows].float().norm(dim=-1).mean()
    assert torch.allclose(after[1], real)
