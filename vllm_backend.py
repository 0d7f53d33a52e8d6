"""Optional vLLM decoding (`run.py --use_vllm`) and the judger's prompt-embedding assembly.

Stock vLLM takes prompt embeddings: `LLM(..., enable_prompt_embeds=True)`, then `LLM.generate` with
`{"prompt_embeds": tensor [T, d]}` prompts (`vllm.inputs.EmbedsPrompt`). That input arrived in vLLM 0.9.0 for the
V0 engine (vllm-project/vllm#15428) and was ported to the V1 engine by vllm-project/vllm#24278 (September 2025);
0.11.0, the first V1-only release, documents it, so requirements-vllm.txt asks for vllm>=0.11.0. No patched vLLM
is needed, unlike the reference's fast path (whose users met "inputs must be a string, TextPrompt, or
TokensPrompt").

- baseline and text_mas: `VLLMEngine.generate_texts` decodes the rendered prompts, tokenized by the HF tokenizer
  exactly as the HF path tokenizes them (`{"prompt_token_ids": ...}` prompts), with the same merged sampling values,
  token budget and EOS ids, and returns a `models.Generation` whose token counts run up to and including EOS.
- latent_mas: the thinkers roll out their latent thoughts on the HF model (models.ModelWrapper.latent_rollout, the
  same code and KV hand-off as the HF path). The judger is then decoded by vLLM from prompt embeddings built by
  `judger_embeds`: the judger prompt's token embeddings, with every earlier agent's prompt embeddings and the
  aligned latent vectors it was fed spliced in right after the judger's user-turn header (where the reference
  splices them). The header is found from the tokenizer's own chat template (`bridge.split_user_turn`), not from a
  Qwen string; every row is its own [T_i, d] tensor, never padded with zero vectors.

This re-prefills the agents' memory from embeddings, as the reference does, instead of handing the KV cache over:
each agent's prompt and thoughts take new positions after the judger's header, so vLLM judger outputs are not
expected to equal the HF latent path token for token. `ModelWrapper.generate_embeds` decodes the same embedding
sequences on HF (and `HFEngine` exposes it behind the engine interface), which is how the assembly is tested on CPU.

Only `VLLMEngine` imports vllm, and only when it is built.
"""

from __future__ import annotations

import importlib.util
from typing import Sequence

import torch
from transformers import GenerationConfig

from errors import VLLMUnavailable
from models import Generation, ModelWrapper

INSTALL_HINT = "--use_vllm needs vLLM: pip install -r requirements-vllm.txt (CUDA GPU required)"


def vllm_problem() -> str | None:
    """Why --use_vllm cannot run here (one line), or None. Does not import vllm."""
    if importlib.util.find_spec("vllm") is None:
        return INSTALL_HINT
    if not torch.cuda.is_available():
        return "--use_vllm needs a CUDA GPU, and torch sees none; run without --use_vllm (HF backend)"
    return None


def finish_rows(tokenizer, rows: Sequence[Sequence[int]], eos_token_ids: Sequence[int]) -> Generation:
    """Generation from per-row generated token ids, exactly like the HF path: each row cut after its first EOS
    (counted), text decoded with the same tokenizer and skip_special_tokens=True."""
    eos = set(eos_token_ids)
    texts, ids, counts, cut = [], [], [], []
    for row in rows:
        row = list(row)
        n = next((i + 1 for i, tok in enumerate(row) if tok in eos), len(row))
        ids.append(row[:n])
        counts.append(n)
        cut.append(not row[:n] or row[n - 1] not in eos)  # no EOS: stopped at max_tokens
        texts.append(tokenizer.decode(row[:n], skip_special_tokens=True))
    return Generation(texts, ids, counts, cut_at_budget=cut)


# ----------------------------------------------------------------------------------------------------- engines

class HFEngine:
    """The engine interface on the HF model itself: `generate_texts` is Method.generate's HF decode, and
    `generate_from_embeds` decodes prompt embeddings with ModelWrapper.generate_embeds. The CPU twin of
    VLLMEngine (tests, scripts/vllm_check.py)."""

    name = "hf"

    def __init__(self, model: ModelWrapper) -> None:
        self.model = model
        self.calls: list[tuple[str, object]] = []  # ("texts", prompts) / ("embeds", [T_i, d] tensors), for tests

    def generate_texts(self, prompts: list[str], *, max_new_tokens: int, sampling: GenerationConfig | None = None,
                       streams: Sequence[int] | None = None) -> Generation:
        self.calls.append(("texts", list(prompts)))
        ids, mask = self.model.encode(prompts)
        return self.model.generate(ids, mask, max_new_tokens=max_new_tokens, sampling=sampling, streams=streams)

    def generate_from_embeds(self, embeds: list[torch.Tensor], *, max_new_tokens: int,
                             sampling: GenerationConfig | None = None,
                             streams: Sequence[int] | None = None) -> Generation:
        self.calls.append(("embeds", list(embeds)))
        return self.model.generate_embeds(embeds, max_new_tokens=max_new_tokens, sampling=sampling, streams=streams)


def vllm_sampling_values(config: GenerationConfig | None) -> dict:
    """vLLM SamplingParams fields carrying a merged sampling configuration (ModelWrapper.sampling_config): the same
    temperature, top-p, top-k, min-p and repetition penalty as the HF path. Greedy is temperature 0. vLLM's own
    "disabled" values stand for None (top_k -1, min_p 0, repetition_penalty 1)."""
    if config is None or not config.do_sample:
        values = {"temperature": 0.0, "top_p": 1.0, "top_k": -1, "min_p": 0.0}
    else:
        values = {"temperature": float(config.temperature if config.temperature is not None else 1.0),
                  "top_p": float(config.top_p if config.top_p is not None else 1.0),
                  "top_k": int(config.top_k) if config.top_k else -1,
                  "min_p": float(config.min_p or 0.0)}
    penalty = getattr(config, "repetition_penalty", None) if config is not None else None
    values["repetition_penalty"] = float(penalty) if penalty is not None else 1.0
    return values


class VLLMEngine:
    """Stock vLLM's offline `LLM`, decoding token-id prompts or prompt embeddings into `models.Generation`s.

    model_path: the folder (or hub id) the HF model was loaded from (model_store.ModelSource.path), so both
    backends read the same weights; tokenizer/eos_token_ids: the HF wrapper's, so prompts are tokenized and rows
    stopped and counted as on the HF path. dtype: "bfloat16", "float16", "float32" or "auto".
    Sampling: SamplingParams with the run's merged sampling configuration (vllm_sampling_values), the token budget
    and EOS ids; each row's seed is its HF random-stream seed (Method.streams: seed, item id, agent), so a row's
    draws do not depend on its batch, but vLLM's sampler is not the HF path's: sampled texts differ between them.
    """

    name = "vllm"

    def __init__(self, model_path: str, tokenizer, eos_token_ids: Sequence[int], *, tensor_parallel_size: int = 1,
                 gpu_memory_utilization: float = 0.9, enable_prefix_caching: bool = False,
                 enable_prompt_embeds: bool = False, dtype: str = "auto", seed: int | None = 0,
                 max_model_len: int | None = None, **llm_kwargs) -> None:
        try:
            import vllm
        except ImportError:
            raise VLLMUnavailable(INSTALL_HINT) from None
        self.vllm = vllm
        self.tokenizer = tokenizer
        self.eos_token_ids = sorted(set(int(i) for i in eos_token_ids))
        self.enable_prompt_embeds = enable_prompt_embeds
        kwargs = dict(model=model_path, tokenizer=model_path, tensor_parallel_size=tensor_parallel_size,
                      gpu_memory_utilization=gpu_memory_utilization, enable_prefix_caching=enable_prefix_caching,
                      dtype=dtype, seed=0 if seed is None else seed, **llm_kwargs)
        if enable_prompt_embeds:
            kwargs["enable_prompt_embeds"] = True
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        self.llm = vllm.LLM(**kwargs)

    @property
    def version(self) -> str:
        return getattr(self.vllm, "__version__", "unknown")

    def _params(self, rows: int, max_new_tokens: int, sampling: GenerationConfig | None,
                streams: Sequence[int] | None) -> list:
        values = vllm_sampling_values(sampling)
        if streams is not None and len(streams) != rows:
            raise ValueError(f"{len(streams)} random streams for {rows} rows")
        greedy = values["temperature"] == 0
        return [self.vllm.SamplingParams(n=1, max_tokens=max_new_tokens, stop_token_ids=list(self.eos_token_ids),
                                         skip_special_tokens=True, **values,
                                         seed=None if (streams is None or greedy) else int(streams[r]))
                for r in range(rows)]

    def _run(self, prompts: list[dict], max_new_tokens: int, sampling: GenerationConfig | None,
             streams: Sequence[int] | None) -> Generation:
        params = self._params(len(prompts), max_new_tokens, sampling, streams)
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        rows = []
        for out in outputs:
            completion = out.outputs[0]
            ids = list(completion.token_ids)
            # A stop token id is normally the last generated id; keep it counted (and cut there) if a version
            # reports it only as stop_reason.
            stop = getattr(completion, "stop_reason", None)
            if (getattr(completion, "finish_reason", None) == "stop" and isinstance(stop, int)
                    and stop in self.eos_token_ids and (not ids or ids[-1] != stop)):
                ids.append(stop)
            rows.append(ids)
        return finish_rows(self.tokenizer, rows, self.eos_token_ids)

    def generate_texts(self, prompts: list[str], *, max_new_tokens: int, sampling: GenerationConfig | None = None,
                       streams: Sequence[int] | None = None) -> Generation:
        """Decode rendered prompts, tokenized by the HF tokenizer exactly as ModelWrapper.encode does."""
        ids = self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        return self._run([{"prompt_token_ids": list(row)} for row in ids], max_new_tokens, sampling, streams)

    def generate_from_embeds(self, embeds: list[torch.Tensor], *, max_new_tokens: int,
                             sampling: GenerationConfig | None = None,
                             streams: Sequence[int] | None = None) -> Generation:
        """Decode prompt embeddings, one [T_i, d] tensor per row (unpadded), as vLLM EmbedsPrompts."""
        if not self.enable_prompt_embeds:
            raise RuntimeError("this VLLMEngine was built without enable_prompt_embeds=True")
        prompts = [{"prompt_embeds": e.detach().to("cpu")} for e in embeds]
        return self._run(prompts, max_new_tokens, sampling, streams)


def vllm_dtype(dtype: str | None, model_dtype: torch.dtype | None = None) -> str:
    """vLLM's dtype name for --dtype (auto follows the HF model's dtype, bf16 on CUDA, so both backends match)."""
    if dtype and dtype != "auto":
        return dtype
    names = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}
    return names.get(model_dtype, "bfloat16")
