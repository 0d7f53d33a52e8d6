"""LatentMAS research CLI: python run.py --method latent_mas --task gsm8k [...] (see README.md, "Flags")."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

DEFAULT_MODEL = "Qwen/Qwen2.5-Coder-0.5B-Instruct"
PAPER_MODELS = "Qwen/Qwen3-4B, Qwen/Qwen3-8B or Qwen/Qwen3-14B"
# Settings that change results: a --resume must match them exactly.
RESULT_KEYS = ("task", "split", "model_name", "prompt", "max_new_tokens", "latent_steps", "temperature", "top_p",
               "top_k", "seed", "think", "disable_thinking", "latent_space_realign", "realign_lambda", "latent_only",
               "sequential_info_only", "hierarchy", "text_mas_context_length", "system_prompt", "prompt_file_sha256",
               "dtype", "use_vllm")


class UsageError(Exception):
    """Bad input: reported as one line, exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(description="Run baseline, text_mas and/or latent_mas on a benchmark.")
    p.add_argument("--method", nargs="+", default=["latent_mas"], choices=["baseline", "text_mas", "latent_mas"],
                   help="one or more methods, run on the same items with one loaded model")
    p.add_argument("--model_name", default=None, help=f"HF id, local folder or .gguf file (default {DEFAULT_MODEL})")
    p.add_argument("--max_samples", type=int, default=-1, help="first N items of the split; -1 for all")
    p.add_argument("--task", default="gsm8k", help="benchmark name (see data.py TASKS)")
    p.add_argument("--prompt", default="sequential", choices=["sequential", "hierarchical"], help="agent topology")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--split", default="test")
    p.add_argument("--max_new_tokens", type=int, default=None, help="per decoding agent (default: the paper's budget for the task)")
    p.add_argument("--latent_steps", type=int, default=0, help="latent thoughts per non-final agent (latent_mas)")
    p.add_argument("--temperature", type=float, default=0.6, help="0 for greedy decoding")
    p.add_argument("--top_p", type=float, default=0.95, help="nucleus sampling mass")
    p.add_argument("--top_k", type=int, default=None,
                   help="top-k sampling; default: the model's generation config (Qwen3: 20), else transformers' 50; "
                        "0 turns it off")
    p.add_argument("--generate_bs", type=int, default=20, help="items per batch")
    p.add_argument("--text_mas_context_length", type=int, default=-1, help="text_mas: max tokens of earlier outputs pasted in (-1: all)")
    p.add_argument("--think", action="store_true",
                   help="the reference's --think: append the think-opening token <think> after the generation prompt "
                        "of every latent_mas agent (judger included); baseline and text_mas ignore it, as in the "
                        "reference")
    p.add_argument("--disable_thinking", action="store_true",
                   help="render every agent of every method in the chat template's non-thinking mode "
                        "(enable_thinking=False; Qwen3: an empty <think></think> block). Default: the template's own "
                        "default rendering (Qwen3: thinking mode, as the paper ran)")
    p.add_argument("--latent_space_realign", action="store_true", help="ridge realignment W_a (else identity; norm matching always)")
    p.add_argument("--realign_lambda", type=float, default=1e-5, help="ridge lambda of the realignment")
    p.add_argument("--seed", type=int, nargs="+", default=[42],
                   help="one or more seeds; every method runs on every item once per seed (the paper reports the "
                        "mean of 3 runs: --seed 1 2 3), and summary.json gives each seed's metrics and the mean and "
                        "standard deviation")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"], help="auto: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--latent_only", action="store_true", help="ablation: memory keeps only the last agent's latent steps")
    p.add_argument("--sequential_info_only", action="store_true", help="ablation: memory keeps only the last agent's positions")
    p.add_argument("--hierarchy", default="chain", choices=["chain", "parallel"],
                   help="--prompt hierarchical: 'chain' = the reference's (and the published numbers'): each specialist "
                        "continues the previous one's memory, positions continue; 'parallel' = the paper's Figure 2: "
                        "independent specialists from position 0, memories joined for the summarizer")
    p.add_argument("--system_prompt", default=None, help="replace the system line of every agent")
    p.add_argument("--prompt_file", default=None, help="JSON object role -> prompt text (see prompts.py)")
    p.add_argument("--data_dir", default=None, help="local data folder (layout of shared/data); default $LATENTMAS_DATA_DIR, else the Hub")
    p.add_argument("--output_dir", default=None, help="where predictions.jsonl and summary.json go (default outputs/<run>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --output_dir")
    p.add_argument("--quiet", action="store_true", help="no per-problem trace on the console")
    p.add_argument("--decode_latents", type=int, default=0, metavar="K",
                   help="latent_mas: store, print and save the K most likely LM-head tokens and the K nearest input "
                        "embeddings of every latent step (0: off, no extra work)")
    p.add_argument("--settings_file", default=None,
                   help="JSON object of flag -> value (e.g. best_settings.json from scripts/calibrate.py); flags given "
                        "on the command line win")
    p.add_argument("--max_kv_bytes", default=None, metavar="SIZE",
                   help="refuse, before any work, a run whose estimated peak KV cache exceeds SIZE (bytes, or e.g. "
                        "512MiB, 20GB, 1.5G)")
    p.add_argument("--max_kv_tokens", type=int, default=None, metavar="N",
                   help="refuse, before any work, a run whose largest KV cache would hold more than N positions "
                        "(rows x padded length)")
    vllm = p.add_argument_group("vLLM (optional; pip install -r requirements-vllm.txt)")
    vllm.add_argument("--use_vllm", action="store_true")
    vllm.add_argument("--enable_prefix_caching", action="store_true")
    vllm.add_argument("--use_second_HF_model", action="store_true", help="latent rollout on a second HF model on --device2")
    vllm.add_argument("--device2", default="cuda:1")
    vllm.add_argument("--tensor_parallel_size", type=int, default=1)
    vllm.add_argument("--gpu_memory_utilization", type=float, default=0.9)
    return p


# ------------------------------------------------------------------------------------------------ settings file
SETTINGS_RECORD_KEY = "calibration"  # a settings file's informational block (scripts/calibrate.py); never applied


def explicit_flags(argv: list[str] | None) -> set[str]:
    """The dests given on the command line (parsed again with every default suppressed)."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def read_settings_file(path: str) -> dict:
    """{dest: typed value} of a settings file, each value checked by the flag's own parser (type, choices)."""
    from prompts import read_json_file

    raw = read_json_file(path, "--settings_file", UsageError)
    if not isinstance(raw, dict):
        raise UsageError(f"--settings_file {path}: expected a JSON object of flag name -> value")
    parser = build_parser()
    actions = {a.dest: a for a in parser._actions if a.option_strings and a.dest not in ("help", "settings_file")}
    values = {}
    for key, value in raw.items():
        if key == SETTINGS_RECORD_KEY:
            continue
        action = actions.get(key)
        if action is None:
            raise UsageError(f"--settings_file {path}: '{key}' is not a run.py flag")
        if action.nargs == 0:  # store_true
            if not isinstance(value, bool):
                raise UsageError(f"--settings_file {path}: '{key}' must be true or false (got {value!r})")
            values[key] = value
            continue
        many = action.nargs in ("+", "*")
        if many and isinstance(value, (int, float, str)) and not isinstance(value, bool):
            value = [value]  # "seed": 1 reads as [1] (files written before --seed took several values)
        if isinstance(value, (dict, bool)) or value is None or isinstance(value, list) != many:
            raise UsageError(f"--settings_file {path}: '{key}' must be {'a list' if many else 'a single value'} "
                             f"(got {value!r})")
        try:
            parsed = parser.parse_args([action.option_strings[0], *map(str, value if many else [value])])
        except UsageError as exc:
            raise UsageError(f"--settings_file {path}: {exc}") from None
        values[key] = getattr(parsed, key)
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line, with --settings_file values taking the place of defaults (explicit flags win). The applied
    values and the keys overridden on the command line are kept in the namespace (and so in summary.json)."""
    args = build_parser().parse_args(argv)
    if args.settings_file:
        values = read_settings_file(args.settings_file)
        explicit = explicit_flags(argv)
        args.settings_file_applied = {k: v for k, v in values.items() if k not in explicit}
        args.settings_file_overridden = sorted(k for k in values if k in explicit)
        for key, value in args.settings_file_applied.items():
            setattr(args, key, value)
    return args


def settings_file_record(path: str | None) -> dict:
    """The informational block of a settings file (scripts/calibrate.py's "calibration"), or {}."""
    if not path:
        return {}
    record = json.loads(Path(path).read_text(encoding="utf-8")).get(SETTINGS_RECORD_KEY)
    return record if isinstance(record, dict) else {}


def calibration_overlap(args: argparse.Namespace, n_items: int) -> int:
    """How many of this run's items (the first n_items of the split) were in the settings file's dev slice."""
    record = settings_file_record(args.settings_file)
    dev = record.get("dev_slice") or {}
    if record.get("task") != args.task or record.get("split", "test") != args.split or "first_index" not in dev:
        return 0
    return max(0, min(n_items, int(dev.get("last_index", n_items - 1)) + 1) - int(dev["first_index"]))


# --------------------------------------------------------------------------------------------------- KV budget
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4, "kib": 1024, "mib": 1024 ** 2,
          "gib": 1024 ** 3, "tib": 1024 ** 4, "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3, "tb": 1000 ** 4}


def parse_size(text: str) -> int:
    """'1500000', '512MiB', '20GB', '1.5G' (K/M/G/T alone are binary) -> bytes."""
    import re

    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if unit not in _UNITS:
        raise UsageError(f"--max_kv_bytes: cannot read size {text!r} (examples: 1500000, 512MiB, 20GB, 1.5G)")
    return int(float(match.group(1)) * _UNITS[unit])


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


def check_kv_budget(args: argparse.Namespace, method: str, estimate: dict) -> None:
    """One-line refusal when the estimated peak KV cache exceeds --max_kv_bytes or --max_kv_tokens."""
    over = []
    if args.max_kv_bytes is not None and estimate["bytes_total"] > parse_size(args.max_kv_bytes):
        over.append(f"--max_kv_bytes {args.max_kv_bytes}")
    if args.max_kv_tokens is not None and estimate["tokens_total"] > args.max_kv_tokens:
        over.append(f"--max_kv_tokens {args.max_kv_tokens}")
    if over:
        raise UsageError(
            f"{method} would need an estimated peak KV cache of {human_bytes(estimate['bytes_total'])} "
            f"({estimate['bytes_total']:,} bytes = {estimate['tokens_total']:,} positions x "
            f"{estimate['bytes_per_position']:,} bytes; largest single item {human_bytes(estimate['bytes_per_item'])}),"
            f" over {' and '.join(over)}; lower --generate_bs, --latent_steps or --max_new_tokens")


def validate(args: argparse.Namespace) -> None:
    """Checks that need no model: fail in a second, not after a load."""
    if args.latent_steps < 0:
        raise UsageError(f"--latent_steps must be >= 0 (got {args.latent_steps})")
    if args.decode_latents < 0:
        raise UsageError(f"--decode_latents must be >= 0 (got {args.decode_latents})")
    if args.max_kv_bytes is not None and parse_size(args.max_kv_bytes) <= 0:
        raise UsageError(f"--max_kv_bytes must be positive (got {args.max_kv_bytes})")
    if args.max_kv_tokens is not None and args.max_kv_tokens <= 0:
        raise UsageError(f"--max_kv_tokens must be positive (got {args.max_kv_tokens})")
    if args.max_samples == 0 or args.max_samples < -1:
        raise UsageError(f"--max_samples must be a positive number or -1 for all (got {args.max_samples})")
    if args.generate_bs < 1:
        raise UsageError(f"--generate_bs must be >= 1 (got {args.generate_bs})")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise UsageError(f"--max_new_tokens must be >= 1 (got {args.max_new_tokens})")
    if args.temperature < 0 or not 0 < args.top_p <= 1:
        raise UsageError("--temperature must be >= 0 and --top_p in (0, 1]")
    if args.top_k is not None and args.top_k < 0:
        raise UsageError(f"--top_k must be >= 0 (got {args.top_k}; 0 turns top-k off)")
    if args.think and args.disable_thinking:
        raise UsageError("--think (append <think> to latent_mas prompts) and --disable_thinking (non-thinking mode) "
                         "contradict each other; pick one")
    if args.hierarchy == "parallel" and args.prompt != "hierarchical":
        raise UsageError("--hierarchy parallel applies to --prompt hierarchical only")
    if args.realign_lambda < 0:
        raise UsageError("--realign_lambda must be >= 0")
    if args.resume and not args.output_dir:
        raise UsageError("--resume needs the --output_dir of the run to continue")
    if len(set(args.method)) != len(args.method):
        raise UsageError("--method lists a method twice")
    if len(set(args.seed)) != len(args.seed):
        raise UsageError("--seed lists a seed twice")
    if args.use_vllm:
        if args.tensor_parallel_size < 1:
            raise UsageError(f"--tensor_parallel_size must be >= 1 (got {args.tensor_parallel_size})")
        if not 0 < args.gpu_memory_utilization <= 1:
            raise UsageError(f"--gpu_memory_utilization must be in (0, 1] (got {args.gpu_memory_utilization})")
        import importlib.util
        if importlib.util.find_spec("vllm") is None:  # vllm_backend.INSTALL_HINT (not imported here: no torch yet)
            raise UsageError("--use_vllm needs vLLM: pip install -r requirements-vllm.txt (CUDA GPU required)")
        import torch
        if not torch.cuda.is_available():
            raise UsageError("--use_vllm needs a CUDA GPU, and torch sees none; run without --use_vllm (HF backend)")
    if args.use_second_HF_model and not args.use_vllm:
        raise UsageError("--use_second_HF_model only applies with --use_vllm")


def run_settings(args: argparse.Namespace, task) -> dict:
    settings = {k: v for k, v in vars(args).items() if k not in ("resume", "quiet")}
    settings["max_new_tokens"] = args.max_new_tokens or task.max_new_tokens
    settings["prompt_file_sha256"] = (
        hashlib.sha256(Path(args.prompt_file).read_bytes()).hexdigest() if args.prompt_file else None)
    settings["answer_kind"] = task.answer_kind
    # One seed is stored as a number, as before --seed took several values (so --resume and readers of older
    # summaries see the same thing); several as a list.
    settings["seed"] = args.seed[0] if len(args.seed) == 1 else list(args.seed)
    return settings


def check_resume(out_dir: Path, settings: dict) -> None:
    summary = out_dir / "summary.json"
    if not summary.exists():
        raise UsageError(f"--resume: {summary} not found; is {out_dir} the output folder of an earlier run?")
    try:
        old = json.loads(summary.read_text())["settings"]
    except (json.JSONDecodeError, KeyError):
        raise UsageError(f"--resume: {summary} is not a summary written by run.py") from None
    diff = [k for k in RESULT_KEYS if old.get(k) != settings.get(k)]
    if diff:
        k = diff[0]
        raise UsageError(f"--resume: {out_dir} was made with other settings ({k}={old.get(k)!r}, now {settings.get(k)!r}); "
                         "use the same flags or a new --output_dir")


def default_output_dir(args: argparse.Namespace) -> Path:
    model = Path(args.model_name).name.replace("/", "_")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("outputs") / f"{args.task}-{args.prompt}-{'+'.join(args.method)}-{model}-{stamp}"


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    tmp.replace(path)


def enable_thinking(args: argparse.Namespace) -> bool | None:
    """The chat template's enable_thinking: False with --disable_thinking, else None (the template's default)."""
    return False if args.disable_thinking else None


def load_vllm(args: argparse.Namespace, settings: dict):
    """--use_vllm: (HF wrapper, VLLMEngine). vLLM is started first, so it finds the GPU memory it is told to take.
    The HF weights are loaded only for latent_mas (its latent rollout), on --device2 with --use_second_HF_model,
    else on --device (default cuda:0, beside vLLM: lower --gpu_memory_utilization to leave room for them).
    For baseline/text_mas alone the wrapper has no weights (tokenizer, template and config only)."""
    from models import ModelWrapper
    from vllm_backend import VLLMEngine, vllm_dtype

    latent = "latent_mas" in args.method
    wrapper_kwargs = dict(latent_space_realign=args.latent_space_realign, realign_lambda=args.realign_lambda,
                          enable_thinking=enable_thinking(args))
    skeleton = ModelWrapper.without_weights(args.model_name, dtype=vllm_dtype(args.dtype), **wrapper_kwargs)
    engine = VLLMEngine(skeleton.source.path, skeleton.tokenizer, skeleton.eos_token_ids,
                        tensor_parallel_size=args.tensor_parallel_size,
                        gpu_memory_utilization=args.gpu_memory_utilization,
                        enable_prefix_caching=args.enable_prefix_caching, enable_prompt_embeds=latent,
                        dtype=vllm_dtype(args.dtype), seed=args.seed[0])
    model = skeleton
    if latent:
        device = args.device2 if args.use_second_HF_model else (args.device or "cuda:0")
        model = ModelWrapper.from_pretrained(args.model_name, device=device, dtype=args.dtype, **wrapper_kwargs)
    settings["vllm"] = {"version": engine.version, "dtype": vllm_dtype(args.dtype),
                        "enable_prompt_embeds": latent, "hf_weights_loaded": latent,
                        "hf_device": str(model.device) if latent else None}
    return model, engine


def check_output_dir(out_dir: Path, settings: dict, resume: bool) -> None:
    """--resume needs an earlier run's folder with the same settings; a fresh run must not mix into old results."""
    from distributed import shard_files

    predictions_path = out_dir / "predictions.jsonl"
    if resume:
        check_resume(out_dir, settings)
    elif (predictions_path.exists() and predictions_path.stat().st_size) or shard_files(out_dir):
        raise UsageError(f"{out_dir} already holds results; pass --resume to continue it or choose another "
                         "--output_dir")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    validate(args)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import distributed as dp
    from data import get_task, load_task
    from prompts import PromptBook

    ctx = dp.context_from_env()  # torchrun / accelerate launch: one replica per process (see distributed.py)
    if ctx.distributed and args.use_vllm:
        raise UsageError("--use_vllm runs in one process; launch run.py with torchrun/accelerate on the HF backend "
                         "only (vLLM has its own --tensor_parallel_size)")
    task = get_task(args.task)
    prompts = PromptBook.load(args.prompt_file, args.system_prompt)
    if args.model_name is None:
        args.model_name = DEFAULT_MODEL
        if ctx.main:
            print(f"note: no --model_name given, using the packaged {DEFAULT_MODEL}; "
                  f"the paper's models are --model_name {PAPER_MODELS}", file=sys.stderr)
    items = load_task(args.task, split=args.split, data_dir=args.data_dir,
                      max_samples=None if args.max_samples == -1 else args.max_samples)
    settings = run_settings(args, task)
    seeds = list(args.seed)
    out_dir = Path(args.output_dir) if args.output_dir else default_output_dir(args)
    device = args.device
    if ctx.distributed:
        import torch

        device = dp.pick_device(args.device, ctx, torch.cuda.is_available())
        dp.init_group(ctx, device)
        out_dir = Path(dp.broadcast(ctx, str(out_dir)))  # default names carry a time stamp: take rank 0's
        settings["world_size"] = ctx.world_size
    # The output folder is checked on rank 0 (the other ranks may be on machines without it); all ranks agree.
    error = None
    try:
        if ctx.main:
            check_output_dir(out_dir, settings, args.resume)
    except UsageError as exc:
        if not ctx.distributed:
            raise
        error = str(exc)
    dp.agree(ctx, error)

    import torch

    from methods import METHODS, MethodSettings
    from methods.runner import run_method, summarize
    from models import ModelWrapper, library_versions, sampling_values
    from stats import aggregate_seeds

    torch.manual_seed(seeds[0])
    engine = None
    if args.use_vllm:
        model, engine = load_vllm(args, settings)
    else:
        model = ModelWrapper.from_pretrained(
            args.model_name, device=device, dtype=args.dtype, latent_space_realign=args.latent_space_realign,
            realign_lambda=args.realign_lambda, enable_thinking=enable_thinking(args))
    source = model.source
    settings["model"] = {"name": args.model_name, "origin": getattr(source, "origin", None),
                         "path": getattr(source, "path", None), "sha256": getattr(source, "sha256", None),
                         "revision": getattr(model.config, "_commit_hash", None), "dtype": str(model.model.dtype),
                         "device": str(model.device)}
    # The one sampling configuration every decoding agent uses: the model's generation config, the flags over it.
    settings["sampling"] = sampling_values(model.sampling_config(args.temperature, args.top_p, args.top_k))
    settings["versions"] = library_versions()
    if engine is not None:
        settings["versions"]["vllm"] = engine.version
    method_settings = MethodSettings(
        topology=args.prompt, max_new_tokens=settings["max_new_tokens"], temperature=args.temperature,
        top_p=args.top_p, top_k=args.top_k, seed=seeds[0], think=args.think, latent_steps=args.latent_steps,
        latent_only=args.latent_only, sequential_info_only=args.sequential_info_only, hierarchy=args.hierarchy,
        text_mas_context_length=args.text_mas_context_length, decode_latents=args.decode_latents)
    # Worst-case KV cache per method from the rendered prompts' token counts, before the first batch.
    estimates = {name: METHODS[name](model, method_settings, prompts).estimate_kv(items, task.answer_kind,
                                                                                   args.generate_bs)
                 for name in args.method}
    for name, estimate in estimates.items():
        check_kv_budget(args, name, estimate)
    settings["kv_estimate"] = estimates
    overlap = calibration_overlap(args, len(items))
    if args.settings_file:
        settings["calibration_overlap_items"] = overlap
        if overlap and ctx.main:
            print(f"note: {overlap} of this run's items were in the calibration dev slice of {args.settings_file}; "
                  "use --max_samples to keep them out", file=sys.stderr)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {"settings": settings, "status": "running", "methods": {}}
    if ctx.main:
        write_json(out_dir / "summary.json", summary)

    # What is done: (method, seed, index) keys on disk (a launched run pools every rank's; see distributed.py).
    files = dp.ResultFiles(ctx, out_dir, args.method, seeds)
    phases = [(seed, name) for seed in seeds for name in args.method]
    todo = {(seed, name): files.todo(name, seed, len(items)) for seed, name in phases}
    mine = dict(zip(phases, dp.shard([todo[phase] for phase in phases], ctx)))  # this rank's share
    progress = None
    if ctx.distributed:
        total = len(phases) * len(items)
        progress = dp.GlobalProgress(ctx, total, total - sum(map(len, todo.values())),
                                     f"{'+'.join(args.method)} x {len(seeds)} seed(s), {ctx.world_size} ranks")
    per_seed: dict[str, dict[int, dict]] = {name: {} for name in args.method}

    def phase_records(records: list[dict], seed: int, name: str) -> list[dict]:
        return [r for r in records if files.key(r)[:2] == (name, seed) and r["index"] < len(items)]

    def finish_phase(seed: int, name: str, metrics: dict) -> None:
        per_seed[name][seed] = metrics
        summary["methods"][name] = {**aggregate_seeds(per_seed[name]),
                                    "estimated_peak_kv_bytes_total": estimates[name]["bytes_total"],
                                    "estimated_peak_kv_bytes_per_item": estimates[name]["bytes_per_item"]}
        write_json(out_dir / "summary.json", summary)
        print(json.dumps(final_line(args, name, metrics, seed), ensure_ascii=False), flush=True)

    started, written = time.perf_counter(), 0
    try:
        for seed, name in phases:
            method = METHODS[name](model, replace(method_settings, seed=seed), prompts, engine=engine)
            start = time.perf_counter()
            skip = set(range(len(items))) - set(mine[(seed, name)])  # done, or another rank's
            new = run_method(method, args.task, task.answer_kind, items, skip, files.write_path, args.generate_bs,
                             trace=not args.quiet, extra={"seed": seed}, show_bar=not ctx.distributed,
                             on_batch=progress.advance if progress else None)
            written += len(new)
            if not ctx.distributed:
                finish_phase(seed, name, summarize(phase_records(files.previous, seed, name) + new,
                                                   time.perf_counter() - start))
        if ctx.distributed:
            progress.close()
            merged = files.finish(written)
            if ctx.main:
                summary["wall_seconds"] = round(time.perf_counter() - started, 3)
                summary["items_per_rank"] = files.items_per_rank  # what each rank computed in this launch
                for seed, name in phases:
                    finish_phase(seed, name, summarize(phase_records(merged, seed, name)))
    except KeyboardInterrupt:
        if ctx.main:
            summary["status"] = "interrupted"
            write_json(out_dir / "summary.json", summary)
            print(f"interrupted: finished items are in {out_dir}; rerun with --resume --output_dir {out_dir}",
                  file=sys.stderr)
        return 130
    if ctx.main:
        summary["status"] = "finished"
        write_json(out_dir / "summary.json", summary)
        from report import comparison_table

        print(comparison_table(summary["methods"]))
        print(f"results: {out_dir}", file=sys.stderr)
    dp.close_group(ctx)
    return 0


def final_line(args: argparse.Namespace, method: str, m: dict, seed: int) -> dict:
    """The reference's closing stdout JSON line (one per method and seed), plus token counts."""
    return {"method": method, "model": args.model_name, "task": args.task, "prompt": args.prompt, "split": args.split,
            "seed": seed, "max_samples": m["n"], "accuracy": m["accuracy"], "correct": m["correct"],
            "total_time_sec": m["seconds"], "time_per_sample_sec": m["seconds_per_item"],
            "total_output_tokens": m["total_output_tokens"], "judger_output_tokens": m["judger_output_tokens"],
            "avg_output_tokens": m["avg_output_tokens"]}


def one_line_errors(main_fn, prog: str) -> int:
    """Run an entry point; bad input (UsageError, DataError, ModelLoadError, PromptError) becomes one line on stderr
    and exit code 2, never a traceback."""
    from data import DataError
    from distributed import DistributedError
    from models import ModelLoadError
    from prompts import PromptError

    try:
        return main_fn()
    except (UsageError, DataError, ModelLoadError, PromptError, DistributedError) as exc:
        rank = os.environ.get("RANK", "0")
        if rank in ("0", ""):
            print(f"{prog}: error: {exc}", file=sys.stderr)
        elif isinstance(exc, ModelLoadError):  # may be this machine's alone (its GPU, its disk); the rest is shared
            print(f"{prog}: error (rank {rank}): {exc}", file=sys.stderr)
        return 2


def cli() -> int:
    return one_line_errors(main, "run.py")


if __name__ == "__main__":
    sys.exit(cli())
