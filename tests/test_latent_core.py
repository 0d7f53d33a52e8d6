"""Exactness of the latent core on a tiny random Qwen3 with the real Qwen3 tokenizer (fp32, CPU)."""

import pytest
import torch

from memory import join_memories, keep_last, select_rows
from models import ModelWrapper, ridge_realignment

TOL = 1e-4
PROMPTS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "What is 2 + 2?",
    "A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total does it take?",
]


def chat(wrapper, role, question):
    return wrapper.render_chat([{"role": "system", "content": f"You are the {role}."}, {"role": "user", "content": question}])


def rollout_agents(wrapper, questions, steps, roles=("planner", "critic", "refiner")):
    """Three agents' latent rollouts on one growing memory, then the judger's next-token logits."""
    memory = None
    for role in roles:
        ids, mask = wrapper.encode([chat(wrapper, role, q) for q in questions])
        memory, _ = wrapper.latent_rollout(ids, mask, steps, memory)
    ids, mask = wrapper.encode([chat(wrapper, "judger", q) for q in questions])
    logits, _ = wrapper.next_token_logits(ids, mask, memory)
    return logits, memory


@pytest.mark.parametrize("realign", [True, False])
def test_batch_invariance_three_agents_and_judger(make_tiny_wrapper, realign):
    wrapper = make_tiny_wrapper(latent_space_realign=realign)
    batched, memory = rollout_agents(wrapper, PROMPTS, steps=4)
    assert torch.isfinite(batched).all()
    for i, question in enumerate(PROMPTS):
        alone, _ = rollout_agents(wrapper, [question], steps=4)
        assert (batched[i] - alone[0]).abs().max().item() <= TOL
    assert memory.row_lengths().tolist() != [memory.length] * len(PROMPTS), "the memory must hold pads"


def test_handoff_equals_plain_forward_over_concatenated_text(make_tiny_wrapper):
    """Latent thoughts that are real token embeddings must reproduce one plain forward over the whole text."""
    wrapper = make_tiny_wrapper(latent_space_realign=True)
    tok, model = wrapper.tokenizer, wrapper.model
    thoughts = [" first we add the numbers", " then we check the sum twice"]
    questions = PROMPTS[:2]
    embed = model.get_input_embeddings()

    memory = None
    for role, thought in zip(("planner", "critic"), thoughts):
        thought_ids = torch.tensor(tok(thought, add_special_tokens=False)["input_ids"])
        ids, mask = wrapper.encode([chat(wrapper, role, q) for q in questions])
        feed = lambda h, step, t=thought_ids: embed(t[step].expand(h.shape[0]))
        memory, _ = wrapper.latent_rollout(ids, mask, len(thought_ids), memory, thought_fn=feed)
    ids, mask = wrapper.encode([chat(wrapper, "judger", q) for q in questions])
    logits, final_memory = wrapper.next_token_logits(ids, mask, memory)

    for row, question in enumerate(questions):
        text = "".join(chat(wrapper, role, question) + thought for role, thought in zip(("planner", "critic"), thoughts))
        text += chat(wrapper, "judger", question)
        plain_ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
        out = model(input_ids=plain_ids, use_cache=True)
        assert (out.logits[0, -1] - logits[row]).abs().max().item() <= TOL
        real = final_memory.mask[row].bool()
        assert int(real.sum()) == plain_ids.shape[1]
        for layer_ours, layer_plain in zip(final_memory.cache.layers, out.past_key_values.layers):
            assert (layer_ours.keys[row][:, real] - layer_plain.keys[0]).abs().max().item() <= TOL
            assert (layer_ours.values[row][:, real] - layer_plain.values[0]).abs().max().item() <= TOL


def test_latent_thoughts_come_from_the_state_the_lm_head_reads(make_tiny_wrapper):
    """A latent step is fed realign(h) with h the last layer's output after the final norm: the state the LM head
    turns into next-token logits, not the one before the norm (the tiny model's norm weights are not all ones, so
    the two differ in direction, not only in length)."""
    wrapper = make_tiny_wrapper(latent_space_realign=True)
    ids, mask = wrapper.encode([chat(wrapper, "planner", q) for q in PROMPTS])
    memory, hidden = wrapper.latent_rollout(ids, mask, 2, keep_hidden=True)
    logits, after_prompt = wrapper.next_token_logits(ids, mask)
    head = wrapper.model.get_output_embeddings()
    assert (head(hidden[0]).float() - logits).abs().max().item() <= TOL
    # The second state read is the one after the first thought, realign(hidden[0]), was fed.
    fed = wrapper.realign(hidden[0])[:, None, :]
    logits, _ = wrapper._forward_logits(torch.ones_like(mask[:, :1]), wrapper._own(after_prompt), inputs_embeds=fed)
    assert (head(hidden[1]).float() - logits).abs().max().item() <= TOL


def test_zero_latent_steps_keeps_the_prompt_memory(make_tiny_wrapper):
    wrapper = make_tiny_wrapper()
    ids, mask = wrapper.encode([chat(wrapper, "planner", PROMPTS[1])])
    memory, _ = wrapper.latent_rollout(ids, mask, 0)
    assert memory.length == ids.shape[1] and int(memory.next_pos[0]) == ids.shape[1]


def test_inputs_memory_is_not_mutated(make_tiny_wrapper):
    wrapper = make_tiny_wrapper()
    ids, mask = wrapper.encode([chat(wrapper, "planner", q) for q in PROMPTS])
    memory, _ = wrapper.latent_rollout(ids, mask, 2)
    before = memory.cache.layers[0].keys.clone()
    wrapper.latent_rollout(ids, mask, 3, memory)
    assert memory.length == memory.cache.layers[0].keys.shape[2]
    assert torch.equal(memory.cache.layers[0].keys, before)


def test_realignment_solves_the_normal_equations(make_tiny_wrapper):
    wrapper = make_tiny_wrapper(latent_space_realign=True, tie=False)
    rows = len(wrapper.tokenizer)  # the tokenizer's real rows (151,669 of 151,936)
    w_out = wrapper.model.get_output_embeddings().weight.float()[:rows]
    w_in = wrapper.model.get_input_embeddings().weight.float()[:rows]
    matrix, _ = wrapper.realignment()
    lam = wrapper.realign_lambda
    lhs = (w_out.T @ w_out + lam * torch.eye(w_out.shape[1])) @ matrix
    rhs = w_out.T @ w_in
    assert ((lhs - rhs).norm() / rhs.norm()).item() <= 1e-4
    assert wrapper.realignment()[0] is matrix, "computed once, then cached"


def test_tied_embeddings_give_identity_and_norms_match(make_tiny_wrapper):
    wrapper = make_tiny_wrapper(latent_space_realign=True, tie=True)
    matrix, target = wrapper.realignment()
    assert (matrix - torch.eye(matrix.shape[0])).abs().max().item() <= 1e-3
    expected = wrapper.model.get_input_embeddings().weight.float().norm(dim=-1).mean()
    assert abs(target.item() - expected.item()) <= 1e-5 * expected.item()
    aligned = wrapper.realign(torch.randn(5, matrix.shape[0]) * 7)
    assert torch.allclose(aligned.norm(dim=-1), target.expand(5), rtol=1e-5)


def test_ridge_in_chunks_equals_one_shot():
    torch.manual_seed(0)
    w_out, w_in = torch.randn(300, 16), torch.randn(300, 16)
    chunks = [(w_out[i:i + 70], w_in[i:i + 70]) for i in range(0, 300, 70)]
    one_shot = torch.linalg.solve(w_out.T @ w_out + 1e-5 * torch.eye(16), w_out.T @ w_in)
    assert torch.allclose(ridge_realignment(chunks, 1e-5), one_shot, atol=1e-5)


def test_realign_scale_multiplies_instead_of_norm_matching(make_tiny_wrapper):
    wrapper = make_tiny_wrapper(realign_scale=0.5)
    h = torch.randn(3, wrapper.config.hidden_size)
    assert torch.allclose(wrapper.realign(h), 0.5 * h)


def test_keep_last_select_and_join(make_tiny_wrapper):
    wrapper = make_tiny_wrapper()
    ids, mask = wrapper.encode([chat(wrapper, "math", q) for q in PROMPTS])
    memory, _ = wrapper.latent_rollout(ids, mask, 3)
    last = keep_last(memory, 3, wrapper.config)
    assert last.length == 3 and last.mask.all() and torch.equal(last.next_pos, memory.next_pos)
    assert torch.equal(last.cache.layers[1].values, memory.cache.layers[1].values[:, :, -3:])
    assert keep_last(memory, 0, wrapper.config) is None

    row = select_rows(memory, [2], wrapper.config)
    assert torch.equal(row.cache.layers[0].keys[0], memory.cache.layers[0].keys[2])

    other, _ = wrapper.latent_rollout(*wrapper.encode([chat(wrapper, "code", q) for q in PROMPTS]), 5)
    joined = join_memories([memory, other], wrapper.config)
    assert joined.length == memory.length + other.length
    assert torch.equal(joined.row_lengths(), memory.row_lengths() + other.row_lengths())
    assert torch.equal(joined.next_pos, torch.maximum(memory.next_pos, other.next_pos))
    assert joined.nbytes() == memory.nbytes() + other.nbytes()


def test_generate_is_batch_invariant_and_counts_tokens(make_tiny_wrapper):
    wrapper = make_tiny_wrapper()
    memory, _ = wrapper.latent_rollout(*wrapper.encode([chat(wrapper, "planner", q) for q in PROMPTS]), 2)
    ids, mask = wrapper.encode([chat(wrapper, "judger", q) for q in PROMPTS])
    batched = wrapper.generate(ids, mask, memory, max_new_tokens=6)
    assert all(0 < n <= 6 for n in batched.num_tokens)
    for i, question in enumerate(PROMPTS):
        alone_mem, _ = wrapper.latent_rollout(*wrapper.encode([chat(wrapper, "planner", question)]), 2)
        alone = wrapper.generate(*wrapper.encode([chat(wrapper, "judger", question)]), alone_mem, max_new_tokens=6)
        assert alone.token_ids[0] == batched.token_ids[i]


def test_generation_stops_at_eos_and_counts_it(make_tiny_wrapper, monkeypatch):
    """Row 0 emits EOS as its 3rd token, row 1 never does: counts are 3 and max_new_tokens, no padding counted;
    after row 0's EOS only row 1 is decoded (the batch shrinks), and its text equals decoding it alone."""
    import models

    wrapper = make_tiny_wrapper()
    eos = wrapper.eos_token_ids[0]
    script = iter([[11, 12], [13, 14], [eos, 15], [16], [17]])
    rows = []
    monkeypatch.setattr(models, "pick_tokens", lambda scores, *a: rows.append(scores.shape[0]) or torch.tensor(next(script)))
    ids, mask = wrapper.encode([chat(wrapper, "judger", q) for q in PROMPTS[:2]])
    gen = wrapper.generate(ids, mask, max_new_tokens=5)
    assert gen.num_tokens == [3, 5] and rows == [2, 2, 2, 1, 1]
    assert gen.token_ids == [[11, 13, eos], [12, 14, 15, 16, 17]]
    # KV accounting: the largest cache is the 2-row one before row 0 left; row 0 holds its prompt + 2 fed tokens.
    prompt = mask.sum(dim=-1).tolist()
    assert gen.kv["rows"] == 2 and gen.kv["row_positions"] == [prompt[0] + 2, prompt[1] + 4]


@pytest.mark.parametrize("few_rows", [False, True])
def test_shrinking_batch_decodes_like_each_row_alone(make_tiny_wrapper, few_rows):
    """Greedy: rows that stop early leave the batch; every row's tokens equal its own unbatched decode (also with
    the CPU small-batch matmul that from_pretrained installs)."""
    from cpu_linear import use_few_rows_linear

    wrapper = make_tiny_wrapper()
    if few_rows:
        assert use_few_rows_linear(wrapper.model) == 2 * 7 + 1  # 7 projections per layer + the LM head
    eos = wrapper.eos_token_ids[0]
    prompts = [chat(wrapper, "judger", q) for q in PROMPTS]
    alone = [wrapper.generate(*wrapper.encode([p]), max_new_tokens=8).token_ids[0] for p in prompts]
    # Make two rows stop early: a token that row 0 emits from its 2nd token on, and row 2 from its 5th, becomes an
    # EOS; neither appears in row 1, which runs to the budget.
    stop = lambda row, start: next(t for t in row[start:] if t not in alone[1])
    wrapper.eos_token_ids = sorted({eos, stop(alone[0], 1), stop(alone[2], 4)})
    alone = [wrapper.generate(*wrapper.encode([p]), max_new_tokens=8).token_ids[0] for p in prompts]
    batched = wrapper.generate(*wrapper.encode(prompts), max_new_tokens=8)
    assert batched.token_ids == alone
    assert min(map(len, alone)) < 8 == max(map(len, alone)), "the test needs rows that stop early and one that does not"


def test_sampling_honours_streams_and_top_p(make_tiny_wrapper):
    """pick_tokens draws row r from generators[r] alone; the TopP warper of a merged config keeps one token here."""
    from sampling import pick_tokens

    wrapper = make_tiny_wrapper()
    logits = torch.tensor([[5.0, 4.9, -10.0, -10.0]] * 2)
    top_p = wrapper.logits_processors(wrapper.sampling_config(1.0, 0.5, 0), 0, None, "cpu")
    gens = lambda s: [torch.Generator().manual_seed(s + r) for r in range(2)]
    draws = {tuple(pick_tokens(top_p(torch.zeros(2, 0, dtype=torch.long), logits.clone()), True, gens(s)).tolist())
             for s in range(20)}
    assert draws == {(0, 0)}, "top_p 0.5 keeps only the most likely token here"
    draw = lambda s: [tuple(pick_tokens(logits, True, g).tolist()) for g in [gens(s)] for _ in range(10)]
    assert draw(3) == draw(3) and draw(3) != draw(4)
    # Row 1 alone with its own generator draws what it drew in the batch.
    assert [int(pick_tokens(logits[1:], True, [g])) for g in [gens(3)[1]] for _ in range(10)] == [r[1] for r in draw(3)]


@pytest.mark.parametrize("bias", [False, True])
def test_few_rows_linear_matches_linear(bias):
    """FewRowsLinear gives nn.Linear's results for every row count and input rank; 1 row is bit-identical."""
    from cpu_linear import FewRowsLinear

    torch.manual_seed(0)
    reference = torch.nn.Linear(48, 80, bias=bias)
    few = torch.nn.Linear(48, 80, bias=bias)
    few.load_state_dict(reference.state_dict())
    few.__class__ = FewRowsLinear
    for shape in [(1, 48), (1, 1, 48), (2, 48), (3, 1, 48), (2, 5, 48), (64, 48), (65, 48), (0, 48)]:
        x = torch.randn(shape)
        got, want = few(x), reference(x)
        assert got.shape == want.shape and got.is_contiguous()
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        if x.numel() == 48:
            assert torch.equal(got, want)


def test_from_pretrained_installs_few_rows_linear_on_cpu_fp32_only(tiny_model_dir):
    from cpu_linear import FewRowsLinear

    fp32 = ModelWrapper.from_pretrained(tiny_model_dir, device="cpu")
    linears = [m for m in fp32.model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(type(m) is FewRowsLinear for m in linears)
    bf16 = ModelWrapper.from_pretrained(tiny_model_dir, device="cpu", dtype="bfloat16")
    assert not any(type(m) is FewRowsLinear for m in bf16.model.modules())


def test_memories_share_tensors_and_forwards_never_change_them(make_tiny_wrapper):
    """A forward's own copy of a memory shares its tensors (no copy of the KV bytes), and extending it, by a prompt,
    latent steps or decoding, leaves the memory that was passed in exactly as it was."""
    from memory import _layer_tensors, copy_memory

    wrapper = make_tiny_wrapper(tie=False)
    memory = wrapper.prefill(*wrapper.encode([chat(wrapper, "planner", q) for q in PROMPTS[:2]]))
    before = [(k.clone(), v.clone()) for k, v in _layer_tensors(memory.cache)]
    shared = copy_memory(memory, wrapper.config)
    assert all(a.data_ptr() == b.data_ptr() for (a, _), (b, _) in zip(_layer_tensors(memory.cache),
                                                                      _layer_tensors(shared.cache)))
    ids, mask = wrapper.encode([chat(wrapper, "judger", q) for q in PROMPTS[:2]])
    wrapper.latent_rollout(ids, mask, 3, memory)
    wrapper.generate(ids, mask, memory, max_new_tokens=4)
    wrapper.prefill(ids, mask, shared)
    assert all(torch.equal(k, k0) and torch.equal(v, v0)
               for (k, v), (k0, v0) in zip(_layer_tensors(memory.cache), before))
    assert memory.length == before[0][0].shape[2] and shared.length == memory.length
