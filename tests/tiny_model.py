"""The tiny random Qwen3 (real Qwen3 tokenizer) behind `make_tiny_wrapper` and `tiny_model_dir` (conftest.py).

A randomly initialised Qwen3 with tied embeddings writes the same token ("\\n\\n") greedily whatever the prompt: the
last hidden state is mostly the last token's own embedding, and a tied head maps it back to a token like it. Texts
compared on such a model agree whether or not the behaviour under test holds. So the default model is built to
write varied, prompt-dependent text (tests/output_guard.py fails any test where it does not):

- untied embeddings: the LM head is a random map, not the input table read backwards;
- sharper attention (QK_SHARPNESS multiplies the query and key norm weights, so attention logits grow by its
  square) and a stronger attention path (ATTENTION_GAIN multiplies the value and output projections): the last
  position then reads particular prompt positions rather than an average dominated by the shared template, and what
  it reads outweighs the residual stream of the last template token. Measured on 10 GSM8K questions x 9 roles (405
  prompt pairs), seeds 0-2, untied: at the default initialisation 23 to 75 pairs wrote the same 3 greedy tokens and
  125 to 405 the same first token; with these settings no pair wrote the same 3 tokens and 5 to 17 the same first
  token. Sharper attention also amplifies float rounding (batched vs unbatched logits): 1.5 keeps it at 1e-5 of
  the logits' spread, within the tests' 1e-4 tolerance (2 and 3 reached 3e-4 and 1e-2);
- LM_HEAD_SCALE: logits with a standard deviation of about 2.6, as a trained model's, instead of 0.16 (greedy
  argmax does not change; sampling is then not uniform over 151,936 tokens);
- a final norm with weights drawn in [0.5, 1.5] instead of all ones, so the hidden state before the final norm
  points elsewhere than the one after it (with all-ones weights they differ only in length, which the
  realignment's norm matching erases).
"""

from __future__ import annotations

SEED = 0
QK_SHARPNESS = 1.5
ATTENTION_GAIN = 4.0
LM_HEAD_SCALE = 16.0
TIE = False  # tests that need tied embeddings ask for them: make_tiny_wrapper(tie=True)


def config(tokenizer, tie: bool, attn: str = "sdpa"):
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=151936, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, tie_word_embeddings=tie, max_position_embeddings=4096,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tokenizer.pad_token_id,
        attn_implementation=attn,
    )


def build(tokenizer, tie: bool | None = None, seed: int = SEED, attn: str = "sdpa"):
    """A seeded tiny Qwen3ForCausalLM (fp32, eval mode). tie=None takes the module default TIE (untied)."""
    import torch
    from transformers import Qwen3ForCausalLM

    tie = TIE if tie is None else tie
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config(tokenizer, tie, attn)).float().eval()
    return model if tie else vary(model)


def vary(model):
    """Make an untied random Qwen3-like model write prompt-dependent text (see the module docstring); in place,
    seeded by the caller's torch seed."""
    import torch

    assert model.get_input_embeddings().weight is not model.get_output_embeddings().weight, "untie the model first"
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_norm.weight.mul_(QK_SHARPNESS)
            layer.self_attn.k_norm.weight.mul_(QK_SHARPNESS)
            layer.self_attn.v_proj.weight.mul_(ATTENTION_GAIN)
            layer.self_attn.o_proj.weight.mul_(ATTENTION_GAIN)
        model.model.norm.weight.uniform_(0.5, 1.5)
        model.lm_head.weight.mul_(LM_HEAD_SCALE)
    return model
