"""Methods and topologies on the tiny random Qwen3: independence, memory hand-off and ablations."""

import pytest
import torch

from methods import METHODS, MethodSettings
from prompts import PromptBook

ITEMS = [{"question": "What is 2 + 3?"}, {"question": "Tom has 7 apples and eats two of them. How many are left?"}]


def make(name, wrapper, **kw):
    settings = MethodSettings(max_new_tokens=3, temperature=0.0, **kw)
    return METHODS[name](wrapper, settings, PromptBook.load())


def real_kv(memory, row, layer=0):
    keep = memory.mask[row].bool()
    return memory.cache.layers[layer].keys[row][:, keep], memory.cache.layers[layer].values[row][:, keep]


def test_hierarchical_specialists_are_independent(make_tiny_wrapper):
    """A specialist's memory is the same whether or not the other specialists run beside it."""
    wrapper = make_tiny_wrapper(latent_space_realign=True)
    method = make("latent_mas", wrapper, topology="hierarchical", hierarchy="parallel", latent_steps=3)
    (stage,) = method.plan.thinking_stages  # parallel: the three specialists are one stage
    parts, _ = method.think(stage, ITEMS, "number", None, [[] for _ in ITEMS])
    together = [memory for memory, _ in parts]  # each part: (Memory, per-row Segments)
    for s, role in enumerate(stage):
        ((alone, _),), _ = method.think((role,), ITEMS, "number", None, [[] for _ in ITEMS])
        for row in range(len(ITEMS)):
            for layer in range(len(alone.cache.layers)):
                for ours, ref in zip(real_kv(together[s], row, layer), real_kv(alone, row, layer)):
                    assert ours.shape == ref.shape
                    assert (ours - ref).abs().max().item() <= 1e-4
    # Different specialists really hold different thoughts.
    assert real_kv(together[0], 0)[0].shape != real_kv(together[1], 0)[0].shape or \
        (real_kv(together[0], 0)[0] - real_kv(together[1], 0)[0]).abs().max() > 1e-3


def capture_judger_memory(wrapper, monkeypatch) -> list:
    """The memories passed to wrapper.generate (the judger's), in call order."""
    seen = []
    original = wrapper.generate
    monkeypatch.setattr(wrapper, "generate", lambda ids, mask, memory=None, **kw: seen.append(memory) or original(ids, mask, memory, **kw))
    return seen


def test_latent_hierarchical_specialists_start_from_the_question_alone(make_tiny_wrapper, monkeypatch):
    """run_batch hands the summarizer, for every item, each specialist's thoughts as that specialist has them
    alone: its own prompt, nothing of the other specialists, nothing of the other items (keys and values)."""
    wrapper = make_tiny_wrapper()
    method = make("latent_mas", wrapper, topology="hierarchical", hierarchy="parallel", latent_steps=2)
    seen = capture_judger_memory(wrapper, monkeypatch)
    outs = method.run_batch(ITEMS, "number")
    memory, = seen
    for row, out in enumerate(outs):
        specialists = out.agents[:3]
        assert [a.role for a in specialists] == ["math", "science", "code"]
        alone = [wrapper.latent_rollout(*wrapper.encode([a.input]), 2)[0] for a in specialists]
        for layer in range(len(memory.cache.layers)):
            for ours, parts in zip(real_kv(memory, row, layer), zip(*(real_kv(m, 0, layer) for m in alone))):
                ref = torch.cat(parts, dim=1)
                assert ours.shape == ref.shape and (ours - ref).abs().max().item() <= 1e-4


def test_hierarchical_judger_sees_all_three_memories(make_tiny_wrapper, monkeypatch):
    wrapper = make_tiny_wrapper()
    method = make("latent_mas", wrapper, topology="hierarchical", hierarchy="parallel", latent_steps=2)
    seen = []
    original = wrapper.generate
    monkeypatch.setattr(wrapper, "generate", lambda ids, mask, memory=None, **kw: seen.append(memory) or original(ids, mask, memory, **kw))
    outs = method.run_batch(ITEMS, "number")
    specialists = [a for a in outs[0].agents if a.latent_steps]
    assert [a.role for a in specialists] == ["math", "science", "code"]
    memory = seen[0]
    per_specialist = [wrapper.encode([a.input])[1].shape[1] + 2 for a in specialists]
    assert int(memory.row_lengths()[0]) == sum(per_specialist)


@pytest.mark.parametrize("steps", [0, 3])
def test_judger_always_gets_the_memory(make_tiny_wrapper, monkeypatch, steps):
    wrapper = make_tiny_wrapper()
    method = make("latent_mas", wrapper, latent_steps=steps)
    seen = []
    original = wrapper.generate
    monkeypatch.setattr(wrapper, "generate", lambda ids, mask, memory=None, **kw: seen.append(memory) or original(ids, mask, memory, **kw))
    outs = method.run_batch(ITEMS, "number")
    assert seen[0] is not None
    prompts = [a.input for a in outs[0].agents[:3]]
    expected = sum(wrapper.encode([p])[1].shape[1] + steps for p in prompts)
    assert int(seen[0].row_lengths()[0]) == expected
    assert outs[0].output_tokens == outs[0].judger_output_tokens == outs[0].agents[-1].output_tokens


def test_ablations_trim_the_memory(make_tiny_wrapper, monkeypatch):
    wrapper = make_tiny_wrapper()
    seen = []
    original = wrapper.generate
    monkeypatch.setattr(wrapper, "generate", lambda ids, mask, memory=None, **kw: seen.append(memory) or original(ids, mask, memory, **kw))
    make("latent_mas", wrapper, latent_steps=4, latent_only=True).run_batch(ITEMS, "number")
    assert seen[-1].length == 4 and seen[-1].mask.all()
    outs = make("latent_mas", wrapper, latent_steps=4, sequential_info_only=True).run_batch(ITEMS, "number")
    refiner_len = wrapper.encode([o.agents[2].input for o in outs])[1].shape[1] + 4
    assert seen[-1].length == refiner_len


def test_text_mas_hierarchical_specialists_do_not_see_each_other(make_tiny_wrapper):
    wrapper = make_tiny_wrapper()
    outs = make("text_mas", wrapper, topology="hierarchical", hierarchy="parallel").run_batch(ITEMS, "choice")
    agents = outs[1].agents
    assert [a.role for a in agents] == ["math", "science", "code", "summarizer"]
    for a in agents[:3]:
        assert "agents before you" not in a.input
    for a in agents[:3]:
        assert a.output.strip() in agents[3].input
    assert outs[1].output_tokens == sum(a.output_tokens for a in agents)


def test_text_mas_sequential_pastes_earlier_outputs(make_tiny_wrapper):
    wrapper = make_tiny_wrapper()
    outs = make("text_mas", wrapper).run_batch(ITEMS, "code")
    planner, critic = outs[0].agents[:2]
    assert planner.output.strip() in critic.input and "```python" in outs[0].agents[-1].input


def test_chain_hierarchy_is_the_reference_chain(make_tiny_wrapper, monkeypatch):
    wrapper = make_tiny_wrapper()
    calls = []
    original = wrapper.latent_rollout
    monkeypatch.setattr(wrapper, "latent_rollout", lambda ids, mask, steps, memory=None, **kw: calls.append(memory) or original(ids, mask, steps, memory, **kw))
    make("latent_mas", wrapper, topology="hierarchical", hierarchy="chain", latent_steps=1).run_batch(ITEMS, "number")
    assert calls[0] is None and calls[1] is not None and calls[2].length > calls[1].length
