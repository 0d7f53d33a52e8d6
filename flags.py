"""Every flag of run.py, declared once: run.py takes them all, the scripts take the ones they share with it, with the
same names, defaults and help (`add_flags(parser, "model_name", "task", ...)`). Torch-free, so `--help` is fast."""

from __future__ import annotations

import argparse
import math

from data import TASKS  # torch-free: data.py imports only the standard library, utils.py, code_check.py, sandbox.py
from errors import UsageError
from topology import HIERARCHIES, ROLES

DEFAULT_MODEL = "Qwen/Qwen2.5-Coder-0.5B-Instruct"
PAPER_MODELS = "Qwen/Qwen3-4B, Qwen/Qwen3-8B or Qwen/Qwen3-14B"
METHOD_NAMES = ("baseline", "text_mas", "latent_mas")


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows "(default: X)" after every flag with a value worth showing; not after switches (off by
    default), nor where the default is None (the help says what happens then), nor where the help names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS \
                or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


FLAGS: dict[str, dict] = {
    "method": dict(nargs="+", default=["latent_mas"], choices=list(METHOD_NAMES),
                help="one or more methods, run on the same items with one loaded model"),
    "model_name": dict(default=None, help=f"HF id, local folder or .gguf file (default {DEFAULT_MODEL})"),
    "max_samples": dict(type=int, default=-1, help="first N items of the split; -1 for all"),
    "task": dict(default="gsm8k", help=f"benchmark: {', '.join(TASKS)}"),
    "prompt": dict(default="sequential", choices=list(ROLES), help="agent topology"),
    "device": dict(default=None, help="cpu, cuda or cuda:N (default: cuda if available)"),
    "split": dict(default="test",
                help="dataset split; test = the split the paper evaluates on (local data holds only that one)"),
    "max_new_tokens": dict(type=int, default=None,
                help="per decoding agent (default: the paper's budget for the task)"),
    "latent_steps": dict(type=int, default=0,
                help="latent thoughts per non-final agent (latent_mas); with 0 they only prefill their prompts into the "
                     "memory. The paper searched 0, 10, 20, 40, 80"),
    "temperature": dict(type=float, default=0.6, help="0 for greedy decoding"),
    "top_p": dict(type=float, default=0.95,
                help="nucleus sampling: keep the smallest set of tokens whose probability reaches top_p (ignored when "
                     "greedy)"),
    "top_k": dict(type=int, default=None,
                help="top-k sampling; default: the model's generation config (Qwen3: 20), else transformers' 50; 0 turns it "
                     "off"),
    "generate_bs": dict(type=int, default=20, help="items per batch"),
    "text_mas_context_length": dict(type=int, default=-1,
                help="text_mas: max tokens of earlier outputs pasted in (-1: all)"),
    "think": dict(action="store_true",
                help="the reference's --think: append the think-opening token <think> after the generation prompt of every "
                     "latent_mas agent (judger included); baseline and text_mas ignore it, as in the reference"),
    "disable_thinking": dict(action="store_true",
                help="render every agent of every method in the chat template's non-thinking mode (enable_thinking=False; "
                     "Qwen3: an empty <think></think> block). Default: the template's own default rendering (Qwen3: thinking"
                     " mode, as the paper ran)"),
    "score_whole_text": dict(action="store_true",
                help="score as the reference did: read the answer from the whole output, thinking included, and credit the "
                     "last-number / last-line fallbacks also in outputs cut at the token budget. Default: only the text "
                     "after the last </think> (thinking never closed: no answer) and, for outputs cut at the budget, only "
                     "an answer they committed to (a box, an answer phrase)"),
    "latent_space_realign": dict(action="store_true",
                help="ridge realignment W_a (else identity; norm matching always)"),
    "realign_lambda": dict(type=float, default=1e-5, help="ridge lambda of the realignment"),
    "seed": dict(type=int, nargs="+", default=[42],
                 help="one or more seeds; every method runs on every item once per seed (the paper reports the mean "
                      "of 3 runs: --seed 1 2 3), and summary.json gives each seed's metrics and their mean and "
                      "standard deviation. Each item and agent draws from its own stream, keyed by (seed, item id, "
                      "agent role)"),
    "dtype": dict(default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                help="auto: bf16 on CUDA, fp32 on CPU"),
    "latent_only": dict(action="store_true", help="ablation: memory keeps only the last agent's latent steps"),
    "sequential_info_only": dict(action="store_true", help="ablation: memory keeps only the last agent's positions"),
    "hierarchy": dict(default="chain", choices=list(HIERARCHIES),
                help="--prompt hierarchical: 'chain' = the reference's (and the published numbers'): each specialist "
                     "continues the previous one's memory, positions continue; 'parallel' = the paper's Figure 2: "
                     "independent specialists from position 0, memories joined for the summarizer"),
    "system_prompt": dict(default=None, help="replace the system line of every agent"),
    "prompt_file": dict(default=None, help="JSON object role -> prompt text (see prompts.py)"),
    "data_dir": dict(default=None,
                help="local data folder (layout of shared/data); default $LATENTMAS_DATA_DIR, else the Hub"),
    "output_dir": dict(default=None, help="where predictions.jsonl and summary.json go (default outputs/<run>)"),
    "resume": dict(action="store_true", help="continue an interrupted run in --output_dir"),
    "quiet": dict(action="store_true", help="no per-problem trace on the console"),
    "decode_latents": dict(type=int, default=0, metavar="K",
                help="latent_mas: store, print and save the K most likely LM-head tokens and the K nearest input embeddings "
                     "of every latent step (0: off, no extra work)"),
    "settings_file": dict(default=None,
                help="JSON object of flag -> value (e.g. best_settings.json from scripts/calibrate.py); flags given on the "
                     "command line win"),
    "max_kv_bytes": dict(default=None, metavar="SIZE",
                help="refuse, before any work, a run whose estimated peak KV cache exceeds SIZE (bytes, or e.g. 512MiB, "
                     "20GB, 1.5G)"),
    "max_kv_tokens": dict(type=int, default=None, metavar="N",
                help="refuse, before any work, a run whose largest KV cache would hold more than N positions (rows x padded "
                     "length)"),
}

VLLM_FLAGS: dict[str, dict] = {
    "use_vllm": dict(action="store_true", help="decode with vLLM (CUDA GPU); latent_mas's thinkers still run on the HF "
                     "model and vLLM decodes the judger from prompt embeddings"),
    "enable_prefix_caching": dict(action="store_true", help="vLLM's automatic prefix caching"),
    "use_second_HF_model": dict(action="store_true", help="latent rollout on a second HF model on --device2"),
    "device2": dict(default="cuda:1", help="device of the second HF model (--use_second_HF_model)"),
    "tensor_parallel_size": dict(type=int, default=1, help="GPUs vLLM shards the model over"),
    "gpu_memory_utilization": dict(type=float, default=0.9,
                                   help="fraction of the GPU's memory vLLM may take (weights and KV cache)"),
}


def add_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *names: str) -> None:
    """Add the named flags (keys of FLAGS or VLLM_FLAGS) with run.py's names, defaults and help."""
    for name in names:
        parser.add_argument(f"--{name}", **(FLAGS.get(name) or VLLM_FLAGS[name]))


def fill_run_defaults(args: argparse.Namespace) -> None:
    """For scripts: resolve, as run.py does, the defaults that depend on the run: the packaged default model, the
    task's token budget (the paper's) and -1 items meaning all."""
    from data import get_task

    if getattr(args, "model_name", "") is None:
        args.model_name = DEFAULT_MODEL
    if getattr(args, "max_new_tokens", 0) is None:
        args.max_new_tokens = get_task(args.task).max_new_tokens
    if getattr(args, "max_samples", None) == -1:
        args.max_samples = None


def check_decoding_flags(args: argparse.Namespace) -> None:
    """The checks of the sampling and thinking flags, for run.py and every script that takes them."""
    for flag in ("temperature", "top_p"):
        if not math.isfinite(getattr(args, flag)):  # argparse's float() accepts "nan" and "inf"
            raise UsageError(f"--{flag} must be a finite number (got {getattr(args, flag)})")
    if args.temperature < 0 or not 0 < args.top_p <= 1:
        raise UsageError("--temperature must be >= 0 and --top_p in (0, 1]")
    if args.top_k is not None and args.top_k < 0:
        raise UsageError(f"--top_k must be >= 0 (got {args.top_k}; 0 turns top-k off)")
    if args.think and args.disable_thinking:
        raise UsageError("--think (append <think> to latent_mas prompts) and --disable_thinking (non-thinking mode) "
                         "contradict each other; pick one")


def single_seed(args: argparse.Namespace) -> None:
    """For scripts that run one seed: --seed takes run.py's list form, with one value."""
    if len(args.seed) != 1:
        raise UsageError(f"--seed: this script runs one seed (got {len(args.seed)})")
    args.seed = args.seed[0]


def enable_thinking(args: argparse.Namespace) -> bool | None:
    """The chat template's enable_thinking: False with --disable_thinking, else None (the template's default)."""
    return False if args.disable_thinking else None
