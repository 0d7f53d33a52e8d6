"""A training-free bridge that carries latent thoughts from one model to a different one.

Between two different models the KV cache cannot be handed over (other layers, heads and widths), so the sender's
latent thoughts travel as input embeddings instead:

1. Shared tokens: the token ids whose *decoded strings* are equal in both vocabularies. Each vocabulary entry is
   turned into text with `tokenizer.convert_tokens_to_string([token])`, so byte-level BPE ("Ġthe") and
   SentencePiece ("▁the") spellings of " the" match each other. Added/special tokens, empty strings, strings with
   U+FFFD (partial UTF-8 bytes) and strings that several ids of one vocabulary decode to are left out.
2. Ridge map W_bridge [d_s, d_r] = argmin ||W_out_s[S] W - E_r[S]||^2 + lambda ||W||^2 over the shared tokens S:
   sender output-embedding rows (the space the sender's last hidden state lives in) to the receiver's effective
   input embeddings (the embedding module's output, so input scaling is included). It reuses
   `models.ridge_realignment`, the paper's realignment solver, with two different models on the two sides.
3. A bridged thought is e = h W_bridge, rescaled to the receiver's mean input-embedding norm (the paper's norm
   matching) or multiplied by the receiver's `realign_scale` when that is set.
4. The receiver prefills its own prompt with the bridged vectors spliced in right after its user-turn header
   (found from its chat template with a sentinel message), then continues normally: latent steps as a thinker,
   decoding as the judger.

A seeded share of the shared tokens (10 % by default) is held out of the fit; `Bridge.report` gives how often the
bridged output embedding of a held-out token has the receiver's input embedding of the same token as its cosine
nearest neighbour, among all receiver tokens and among the shared ones, beside chance (1 / candidates).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch

from memory import Memory
from models import ModelWrapper, ridge_realignment
from splice import split_user_turn



# ------------------------------------------------------------------------------------------------ shared tokens

_STRINGS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def token_strings(tokenizer) -> dict[str, int]:
    """Decoded string -> token id for the plain (non-added) tokens whose string is unambiguous and valid text
    (computed once per tokenizer object)."""
    if tokenizer not in _STRINGS:
        _STRINGS[tokenizer] = _token_strings(tokenizer)
    return _STRINGS[tokenizer]


def _token_strings(tokenizer) -> dict[str, int]:
    added = set(getattr(tokenizer, "added_tokens_decoder", {}) or {}) | set(tokenizer.all_special_ids)
    seen: dict[str, int] = {}
    clash: set[str] = set()
    for token, idx in tokenizer.get_vocab().items():
        if idx in added:
            continue
        text = tokenizer.convert_tokens_to_string([token])
        if not text or "\ufffd" in text:
            continue
        if text in seen and seen[text] != idx:
            clash.add(text)
        seen[text] = idx
    return {text: idx for text, idx in seen.items() if text not in clash}


def shared_tokens(sender_tokenizer, receiver_tokenizer) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(sender ids [n], receiver ids [n], strings) of the tokens both vocabularies spell the same, sorted by string."""
    a, b = token_strings(sender_tokenizer), token_strings(receiver_tokenizer)
    strings = sorted(set(a) & set(b))
    return (torch.tensor([a[s] for s in strings], dtype=torch.long),
            torch.tensor([b[s] for s in strings], dtype=torch.long), strings)


# ------------------------------------------------------------------------------------------------------- bridge

@dataclass
class Bridge:
    """The fitted map from a sender's hidden/output space [d_s] to a receiver's input-embedding space [d_r]."""

    matrix: torch.Tensor          # [d_s, d_r] float32
    target_norm: torch.Tensor     # scalar: the receiver's mean input-embedding norm
    sender: str
    receiver: str
    report: dict = field(default_factory=dict)

    def __call__(self, hidden: torch.Tensor, scale: float | None = None) -> torch.Tensor:
        """h [..., d_s] -> e [..., d_r] float32: h W_bridge norm-matched to the receiver (or times `scale`)."""
        aligned = hidden.float().to(self.matrix.device) @ self.matrix
        if scale is not None:
            return aligned * scale
        return aligned * (self.target_norm / aligned.norm(dim=-1, keepdim=True).clamp_min(1e-6))


def _rows(weight_or_module, ids: torch.Tensor, chunk: int = 8192):
    """Rows of a weight matrix (or outputs of an embedding module) for ids, in chunks, on the weight's device."""
    for start in range(0, len(ids), chunk):
        part = ids[start:start + chunk]
        if isinstance(weight_or_module, torch.nn.Module):
            yield weight_or_module(part.to(weight_or_module.weight.device))
        else:
            yield weight_or_module[part.to(weight_or_module.device)]


@torch.no_grad()
def fit_bridge(sender: ModelWrapper, receiver: ModelWrapper, *, lam: float = 1e-5, holdout: float = 0.1,
               seed: int = 0, evaluate: bool = True) -> Bridge:
    """Fit W_bridge on the shared tokens less a seeded `holdout` share (the fitted map is the one used) and, if
    `evaluate`, put the held-out nearest-neighbour accuracy in `Bridge.report`.

    lam is the ridge lambda, the paper's 1e-5 by default: on Qwen2.5-Coder-0.5B <-> SmolLM2-135M, 1e-2 gives the
    same held-out accuracy and 1.0 or more lowers it."""
    s_ids, r_ids, strings = shared_tokens(sender.tokenizer, receiver.tokenizer)
    if len(strings) < 2 * sender.config.hidden_size:
        raise ValueError(f"only {len(strings)} tokens are spelled the same in {sender.name} and {receiver.name}; "
                         "too few to fit a bridge")
    order = torch.randperm(len(strings), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(holdout * len(strings)))
    test, train = order[:n_test], order[n_test:]
    w_out = sender.model.get_output_embeddings().weight
    embed = receiver.model.get_input_embeddings()
    chunks = zip(_rows(w_out, s_ids[train]), (e.to(w_out.device) for e in _rows(embed, r_ids[train])))
    matrix = ridge_realignment(chunks, lam)
    _, target = receiver.realignment()
    bridge = Bridge(matrix, target.to(matrix.device), sender.name, receiver.name)
    bridge.report = {"sender": sender.name, "receiver": receiver.name, "shared_tokens": len(strings),
                     "fit_tokens": len(train), "heldout_tokens": n_test, "lambda": lam, "seed": seed}
    if evaluate and n_test:
        bridge.report.update(nearest_neighbour(bridge, sender, receiver, s_ids[test], r_ids[test], r_ids))
    return bridge


@torch.no_grad()
def nearest_neighbour(bridge: Bridge, sender: ModelWrapper, receiver: ModelWrapper, s_test: torch.Tensor,
                      r_test: torch.Tensor, r_shared: torch.Tensor, chunk: int = 256) -> dict:
    """Share of held-out tokens whose bridged sender output embedding has, as its cosine nearest neighbour,
    the receiver's input embedding of the same token: among all receiver tokens and among the shared tokens."""
    embed = receiver.model.get_input_embeddings()
    vocab = embed.weight.shape[0]
    all_ids = torch.arange(vocab)
    cand = torch.nn.functional.normalize(torch.cat(list(_rows(embed, all_ids))).float(), dim=-1).to(bridge.matrix.device)
    shared_pos = torch.full((vocab,), -1, dtype=torch.long)
    shared_pos[r_shared] = torch.arange(len(r_shared))
    cand_shared = cand[r_shared.to(cand.device)]
    w_out = sender.model.get_output_embeddings().weight
    hits_all = hits_shared = hits_top5 = 0
    for start in range(0, len(s_test), chunk):
        mapped = bridge(w_out[s_test[start:start + chunk].to(w_out.device)])
        mapped = torch.nn.functional.normalize(mapped, dim=-1)
        truth = r_test[start:start + chunk].to(cand.device)
        sims = mapped @ cand.T
        top = sims.topk(5, dim=-1).indices
        hits_all += int((top[:, 0] == truth).sum())
        hits_top5 += int((top == truth[:, None]).any(dim=-1).sum())
        best_shared = (mapped @ cand_shared.T).argmax(dim=-1)
        hits_shared += int((best_shared == shared_pos[truth.cpu()].to(best_shared.device)).sum())
    n = len(s_test)
    return {"nn_top1_all": hits_all / n, "nn_top5_all": hits_top5 / n, "candidates_all": vocab,
            "chance_all": 1 / vocab, "nn_top1_shared": hits_shared / n, "candidates_shared": len(r_shared),
            "chance_shared": 1 / len(r_shared)}


# ------------------------------------------------------------------------------------------ splice & receive

@torch.no_grad()
def receive(model: ModelWrapper, messages: list[list[dict]], thoughts: torch.Tensor | None,
            memory: Memory | None = None) -> tuple[Memory | None, list[str]]:
    """Prefill each row's prompt up to its user-turn header, then the bridged thoughts [B, k, d_r].

    Returns the memory and the rest of each prompt as text, which the caller feeds to `latent_rollout` (a thinker)
    or `generate` (the judger) after that memory, exactly as it would feed a whole prompt. With no thoughts the
    memory is returned unchanged with the whole rendered prompts.
    """
    if thoughts is None:
        return memory, [model.render_chat(m) for m in messages]
    prefixes, rests = zip(*(split_user_turn(model, m) for m in messages))
    memory = model.prefill(*model.encode(list(prefixes)), memory)
    ones = torch.ones(thoughts.shape[:2], dtype=torch.long, device=model.device)
    memory = model.prefill_embeds(thoughts, ones, memory)
    return memory, list(rests)
