"""One topology plan, every executor: each plan is built, then the KV hand-off, the vLLM embeddings splice, the KV
estimator and text_mas are checked against it and against each other on the same items."""

import pytest

from methods import METHODS, MethodSettings
from prompts import PromptBook
from topology import make_plan
from engine import HFEngine

ITEMS = [{"id": "a", "question": "What is 2 + 3?"},
         {"id": "b", "question": "Tom has 7 apples and eats two of them. How many are left?"}]
PLANS = [  # (topology, hierarchy, latent_only, sequential_info_only)
    ("sequential", "chain", False, False), ("sequential", "chain", True, False), ("sequential", "chain", False, True),
    ("hierarchical", "chain", False, False), ("hierarchical", "parallel", False, False),
    ("hierarchical", "parallel", True, False)]


def test_plans_declare_the_topologies():
    assert make_plan("sequential").stages == (("planner",), ("critic",), ("refiner",), ("judger",))
    assert make_plan("hierarchical").stages == (("math",), ("science",), ("code",), ("summarizer",))
    assert make_plan("hierarchical", "parallel").stages == (("math", "science", "code"), ("summarizer",))
    assert make_plan("sequential", latent_only=True).keep == "latent"
    assert make_plan("sequential", sequential_info_only=True).keep == "own"
    with pytest.raises(ValueError, match="hierarchy"):
        make_plan("hierarchical", "star")


@pytest.mark.parametrize("topology,hierarchy,latent_only,info_only", PLANS)
def test_every_executor_follows_the_plan(make_tiny_wrapper, monkeypatch, topology, hierarchy, latent_only,
                                         info_only):
    """The KV path's final memory, the splice path's segments and the estimator's shape hold the same positions per
    row; every executor runs the plan's agents in the plan's order; text_mas agents read exactly the earlier stages."""
    m, new_tokens = 2, 3
    settings = MethodSettings(topology=topology, hierarchy=hierarchy, latent_only=latent_only,
                              sequential_info_only=info_only, latent_steps=m, max_new_tokens=new_tokens,
                              temperature=0.0)
    wrapper = make_tiny_wrapper()
    method = METHODS["latent_mas"](wrapper, settings, PromptBook.load())
    plan = method.plan
    order = [role for stage in plan.stages for role in stage]

    # The hand-off: the KV memory the final agent continues, and the memory's own sequence.
    seen = []
    generate = HFEngine.generate
    monkeypatch.setattr(HFEngine, "generate", lambda self, prompts, handoff=None, **kw: seen.append(handoff)
                        or generate(self, prompts, handoff=handoff, **kw))
    outs = method.run_batch(ITEMS, "number")
    assert [a.role for a in outs[0].agents] == order
    (handoff,) = seen
    memory = handoff.memory if handoff is not None else None
    kv_real = memory.row_lengths().tolist() if memory is not None else [0, 0]

    # The estimator: the final cache minus the final agent's prompt and decoding is what it reads.
    final_cache = method.kv_plan(ITEMS, "number")[-1]
    judger = method.prompt_lengths(method.render(plan.final_role, ITEMS, "number", latent=memory is not None))
    assert [r - k - (new_tokens - 1) for r, k in zip(final_cache[1], judger)] == kv_real
    assert final_cache[0] // len(ITEMS) - max(judger) - (new_tokens - 1) == (memory.length if memory else 0)

    # The memory's own sequence (what vLLM re-prefills): the same positions, without padding; exact only where the
    # memory keeps every position in order.
    assert [sum(len(seg) for seg in row) for row in (handoff.segments if handoff else [[], []])] == kv_real
    if handoff is not None:
        assert handoff.exact == (hierarchy == "chain" and not latent_only and not info_only)

    # text_mas: the same agents in the same order; an agent reads the outputs of every earlier stage, no other.
    text_outs = METHODS["text_mas"](wrapper, settings, PromptBook.load()).run_batch(ITEMS, "number")
    agents = text_outs[0].agents
    assert [a.role for a in agents] == order
    stage_of = {role: k for k, stage in enumerate(plan.stages) for role in stage}
    for reader in agents:
        for writer in agents:
            earlier = stage_of[writer.role] < stage_of[reader.role]
            assert (f"[{writer.name}]\n{writer.output.strip()}" in reader.input) == earlier, (reader.role, writer.role)
