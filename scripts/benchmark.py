"""Efficiency benchmark of the paper's claims, on one machine, in one process, on the same items.

    python scripts/benchmark.py --data_dir ../shared/data --max_samples 10 --max_new_tokens 256 --latent_steps 10

--methods_from RUN_DIR... fills the methods section from finished `run.py --method baseline text_mas latent_mas`
folders with the same settings (one per --prompt) instead of running the methods a second time.

    python scripts/benchmark.py --backend hf vllm --data_dir ../shared/data --max_samples 20 --latent_steps 10

--backend hf vllm runs the two engine sections instead (vLLM: bash scripts/install.sh --vllm), both backends in
this one process on the same items:
  throughput  greedy decode tokens per second of each backend at each --throughput_batch_sizes, in fp32 and
              bf16 (the same rendered prompts; rows token-identical to HF counted)
  paper       the paper's comparison: TextMAS decoded on vLLM against LatentMAS with the HF judger (the KV
              hand-off) and with the vLLM judger (the `kv` layout), sequential: output tokens, seconds, ratios

Sections (all written to <output_dir>/benchmark.json and <output_dir>/benchmark.md; default benchmarks/latest):
  methods     baseline / text_mas / latent_mas, sequential and hierarchical: accuracy, output tokens, seconds,
              and the ratios against text_mas (each run's predictions.jsonl is kept for report.py)
  steps       one latent step against one decode step at the same context length; prefill tokens per second
  batching    latent_mas items per second at several --generate_bs
  memory      KV-cache bytes per item as the agents' memories accumulate, and peak process memory
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data import get_task, load_task  # noqa: E402
from methods import METHODS, MethodSettings  # noqa: E402
from methods.latent_mas import HandoffOps, KVOps  # noqa: E402
from methods.runner import run_method, summarize  # noqa: E402
from memory import copy_memory  # noqa: E402
from models import ModelWrapper  # noqa: E402
from provenance import library_versions  # noqa: E402
from prompts import PromptBook  # noqa: E402
from errors import OneLineParser, UsageError, one_line_errors  # noqa: E402
from flags import DefaultsHelpFormatter, add_flags, fill_run_defaults, single_seed  # noqa: E402
from topology import walk  # noqa: E402


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bench_methods(model, items, task, args, out: Path) -> list[dict]:
    rows = []
    for topology in ("sequential", "hierarchical"):
        settings = MethodSettings(topology=topology, max_new_tokens=args.max_new_tokens, temperature=0.0,
                                  seed=args.seed, latent_steps=args.latent_steps)
        for name in ("baseline", "text_mas", "latent_mas"):
            if name == "baseline" and topology == "hierarchical":
                continue  # the single agent has no topology: its sequential row serves both
            path = out / f"{topology}-{name}" / "predictions.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")
            method = METHODS[name](model, settings, PromptBook.load())
            start = time.perf_counter()
            records = run_method(method, task, items, set(), path, args.generate_bs, trace=False)
            metrics = summarize(records, time.perf_counter() - start)
            rows.append({"topology": topology, "method": name, **metrics})
            print(json.dumps(rows[-1]), flush=True)
    return add_ratios(rows)


def add_ratios(rows: list[dict]) -> list[dict]:
    """Tokens and speed-up of every row against text_mas of the same topology (rows without one are skipped)."""
    for row in rows:
        ref = next((r for r in rows if r["method"] == "text_mas" and r["topology"] == row["topology"]), None)
        if ref is not None:
            row["tokens_vs_text_mas"] = row["total_output_tokens"] / ref["total_output_tokens"]
            row["speedup_vs_text_mas"] = ref["wall_seconds_this_process"] / row["wall_seconds_this_process"]
    return rows


# Settings that must agree between the run.py folders read by --methods_from (the topology may differ).
SAME_SETTINGS = ("task", "split", "max_samples", "max_new_tokens", "latent_steps", "temperature", "top_p", "seed",
                 "generate_bs", "latent_space_realign")


def methods_from_runs(run_dirs: list[str], args) -> list[dict]:
    """The methods section from finished `run.py --method baseline text_mas latent_mas` folders (one per
    --prompt), instead of running the methods again: every ratio still compares methods run in one process on the
    same items. The folders must agree with each other and with this benchmark's settings."""
    rows, first = [], None
    for run_dir in run_dirs:
        path = Path(run_dir) / "summary.json"
        if not path.exists():
            raise UsageError(f"{path} not found (a run.py --output_dir)")
        summary = json.loads(path.read_text())
        settings = summary["settings"]
        if summary.get("status") != "finished":
            raise UsageError(f"{run_dir} is not finished (status {summary.get('status')!r})")
        wanted = {"task": args.task, "max_samples": args.max_samples, "max_new_tokens": args.max_new_tokens,
                  "latent_steps": args.latent_steps, "model_name": args.model_name, "temperature": 0.0}
        first = first or settings
        differ = [k for k in SAME_SETTINGS if settings.get(k) != first.get(k)] + \
                 [k for k in wanted if settings.get(k) != wanted[k]]
        if differ:
            raise UsageError(f"{run_dir} differs from the benchmark or the other folders in {differ}")
        for name, metrics in summary["methods"].items():
            rows.append({"topology": settings["prompt"], "method": name, "from": str(run_dir), **metrics})
    return add_ratios(rows)


def time_calls(fn, reps: int) -> float:
    """Median seconds of fn() over reps runs (after one warm-up)."""
    fn()
    times = []
    for _ in range(reps):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def bench_steps(model: ModelWrapper, contexts: list[int], reps: int) -> list[dict]:
    """One latent step (decoder body + realignment) vs one decode step (full model + LM head + argmax)."""
    rows = []
    vocab = model.model.get_input_embeddings().weight.shape[0]
    for length in contexts:
        ids = torch.randint(0, min(vocab, 50000), (1, length), generator=torch.Generator().manual_seed(0)).to(model.device)
        mask = torch.ones_like(ids)
        prefill = time_calls(lambda: model.prefill(ids, mask), max(1, reps // 4))
        memory = model.prefill(ids, mask)
        one = torch.ones(1, 1, dtype=mask.dtype, device=mask.device)
        hidden = torch.randn(1, model.config.hidden_size, device=model.device)
        model.realignment()  # built once, outside the timed steps

        def latent_step():
            fresh = copy_memory(memory, model.config)
            sync()
            start = time.perf_counter()
            h, _ = model._forward_hidden(one, fresh, inputs_embeds=model.realign(hidden).to(model.model.dtype)[:, None])
            sync()
            return time.perf_counter() - start

        def decode_step():
            fresh = copy_memory(memory, model.config)
            sync()
            start = time.perf_counter()
            logits, _ = model._forward_logits(one, fresh, input_ids=ids[:, -1:])
            logits.argmax(dim=-1)
            sync()
            return time.perf_counter() - start

        latent_step(), decode_step()  # warm-up
        # Interleaved, so that drift in the machine's speed (other tenants, clocks) hits both alike.
        pairs = [(latent_step(), decode_step()) for _ in range(reps)]
        latent = statistics.median(a for a, _ in pairs)
        decode = statistics.median(b for _, b in pairs)
        rows.append({"context": length, "latent_step_ms": 1000 * latent, "decode_step_ms": 1000 * decode,
                     "latent_over_decode": latent / decode, "prefill_tokens_per_s": length / prefill})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def bench_batching(model, items, task, args) -> list[dict]:
    """latent_mas items/s at each --generate_bs on the same items; greedy outputs must not depend on it.

    Interleaved: the items go in groups of the largest batch size, and every batch size runs each group before the
    next group starts (the order rotating from group to group), so that drift in the machine's speed over the
    minutes of a run (other tenants of a shared host) hits every batch size alike."""
    settings = MethodSettings(max_new_tokens=args.batching_max_new_tokens or args.max_new_tokens, temperature=0.0,
                              seed=args.seed, latent_steps=args.latent_steps)
    method = METHODS["latent_mas"](model, settings, PromptBook.load())  # items: max(--max_samples, largest bs)
    sizes, group = args.batch_sizes, max(args.batch_sizes)
    seconds = {bs: 0.0 for bs in sizes}
    texts: dict[int, list[str]] = {bs: [] for bs in sizes}
    for g, first in enumerate(range(0, len(items), group)):
        chunk = items[first:first + group]
        for bs in sizes[g % len(sizes):] + sizes[:g % len(sizes)]:
            sync()
            start = time.perf_counter()
            for i in range(0, len(chunk), bs):
                texts[bs] += [out.final_text for out in method.run_batch(chunk[i:i + bs], task.answer_kind)]
            sync()
            seconds[bs] += time.perf_counter() - start
        print(json.dumps({"items_done": first + len(chunk), "seconds": seconds}), flush=True)
    rows = [{"generate_bs": bs, "items": len(items), "seconds": seconds[bs], "items_per_s": len(items) / seconds[bs],
             "same_outputs_as_first": sum(a == b for a, b in zip(texts[bs], texts[sizes[0]])),
             "vs_bs1": seconds[sizes[0]] / seconds[bs]} for bs in sizes]
    for row in rows:
        print(json.dumps(row), flush=True)
    return rows


@torch.no_grad()
def bench_memory(model, items, task, args) -> list[dict]:
    """KV bytes per item after each agent, sequential chain and parallel hierarchy."""
    rows = []
    batch = items[: args.generate_bs]
    for topology in ("sequential", "hierarchical"):
        settings = MethodSettings(topology=topology, max_new_tokens=args.max_new_tokens, latent_steps=args.latent_steps,
                                  hierarchy="parallel")
        method = METHODS["latent_mas"](model, settings, PromptBook.load())
        traces = [[] for _ in batch]
        observe = lambda roles, read: rows.append({"topology": topology, "after": "+".join(roles),
                                                   "positions": read[0].length,
                                                   "kv_bytes_per_item": read[0].nbytes() / len(batch)})
        walk(method.plan, lambda roles, read: method.think(roles, batch, task.answer_kind, read, traces),
             HandoffOps(KVOps(model.config, args.latent_steps)), observe)
    peak = (torch.cuda.max_memory_allocated() if torch.cuda.is_available()
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    rows.append({"topology": "-", "after": "whole benchmark", "peak_process_bytes": peak})
    return rows


def single_prompts(model: ModelWrapper, items: list[dict], answer_kind: str) -> list[str]:
    return [model.render_chat(PromptBook.load().messages("single", it["question"], answer_kind)) for it in items]


def vllm_engine(model: ModelWrapper, args):
    """A vLLM engine over the HF model's weights in its dtype, KV cache as run.py sizes it."""
    from vllm_backend import VLLMEngine, memory_settings, vllm_dtype

    return VLLMEngine(model.source.path, model.tokenizer, model.eos_token_ids,
                      dtype=vllm_dtype(None, model.model.dtype), enable_prompt_embeds=True,
                      memory=memory_settings(torch.cuda.is_available(), args.vllm_kv_cache_gib, None),
                      max_model_len=args.max_model_len)


def decode_rate(engine, prompts: list[str], max_new_tokens: int) -> tuple[dict, list[list[int]]]:
    sync()
    start = time.perf_counter()
    gen = engine.generate(prompts, max_new_tokens=max_new_tokens)
    sync()
    seconds = time.perf_counter() - start
    tokens = sum(gen.num_tokens)
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}, gen.token_ids


def bench_throughput(args, items, task, engines: dict) -> list[dict]:
    """Greedy decode tokens/s of each backend, each dtype and batch size, on the same prompts (the first `batch`
    items). The fp32 engines are kept in `engines` for the paper section; the others are closed."""
    from engine import HFEngine

    rows = []
    for dtype in ("bfloat16", "float32"):  # fp32 last: its engines serve the paper section
        model = ModelWrapper.from_pretrained(args.model_name, device=args.device, dtype=dtype)
        backends = {"hf": HFEngine(model)}
        if "vllm" in args.backend:
            backends["vllm"] = vllm_engine(model, args)
        for engine in backends.values():
            engine.generate(single_prompts(model, items[:1], task.answer_kind), max_new_tokens=4)  # warm-up
        for bs in args.throughput_batch_sizes:
            prompts = single_prompts(model, items[:bs], task.answer_kind)
            reference = None
            for name in args.backend:  # the same prompts on every backend, one after the other
                row, ids = decode_rate(backends[name], prompts, args.throughput_max_new_tokens)
                reference = reference or ids
                rows.append({"backend": name, "dtype": dtype, "batch": bs, **row,
                             "rows_identical_to_first": sum(a == b for a, b in zip(ids, reference))})
                print(json.dumps(rows[-1]), flush=True)
        if dtype == "float32":
            engines.update(backends, model=model)
        elif "vllm" in backends:
            backends["vllm"].close()
    return rows


def bench_paper(args, items, task, engines: dict) -> list[dict]:
    """TextMAS on vLLM vs LatentMAS (HF judger, and vLLM judger in the kv layout), sequential, fp32, greedy, the
    same items in batches of --generate_bs: accuracy, output tokens, wall seconds and the ratios to TextMAS."""
    model = engines["model"]
    settings = MethodSettings(max_new_tokens=args.max_new_tokens, temperature=0.0, seed=args.seed,
                              latent_steps=args.latent_steps)
    runs = [("text_mas", "vllm", "vLLM"), ("latent_mas", "hf", "HF (KV hand-off)"),
            ("latent_mas", "vllm", "vLLM judger (kv layout)")]
    rows = []
    for name, backend, judger in runs:
        if backend not in engines:
            continue
        method = METHODS[name](model, settings, PromptBook.load(), engine=engines[backend])
        sync()
        start = time.perf_counter()
        outs = [o for i in range(0, len(items), args.generate_bs)
                for o in method.run_batch(items[i:i + args.generate_bs], task.answer_kind)]
        sync()
        seconds = time.perf_counter() - start
        scores = task.score_batch([o.final_text for o in outs], items)
        rows.append({"method": name, "decoder": judger, "items": len(items), "correct": sum(s.correct for s in scores),
                     "output_tokens": sum(o.output_tokens for o in outs), "seconds": seconds})
        print(json.dumps(rows[-1]), flush=True)
    text = next((r for r in rows if r["method"] == "text_mas"), None)
    for row in rows:
        if text is not None:
            row["tokens_vs_text_mas"] = row["output_tokens"] / text["output_tokens"]
            row["speedup_vs_text_mas"] = text["seconds"] / row["seconds"]
    return rows


def table(title: str, columns: list[str], lines: list[str]) -> list[str]:
    """A Markdown section: its title, a table of these columns and rows, a blank line."""
    return [f"## {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns), *lines, ""]


def markdown(result: dict) -> str:
    out = [f"# Benchmark: {result['settings']['model_name']} on {result['settings']['device']}", "",
           "Settings: " + ", ".join(f"{k}={v}" for k, v in result["settings"].items()), ""]
    if result.get("methods"):
        out += ["## Methods (same items, greedy)", "",
                "| Topology | Method | Accuracy | Output tokens | Wall s | Tokens vs TextMAS | Speed-up vs TextMAS |",
                "|---|---|---|---|---|---|---|"]
        for r in result["methods"]:
            ratios = (f"{r['tokens_vs_text_mas']:.3f} ({100 * (1 - r['tokens_vs_text_mas']):.1f}% fewer) | "
                      f"{r['speedup_vs_text_mas']:.2f}x") if "tokens_vs_text_mas" in r else "- | -"
            out.append(f"| {r['topology']} | {r['method']} | {r['correct']}/{r['n']} | {r['total_output_tokens']} | "
                       f"{r['wall_seconds_this_process']:.1f} | {ratios} |")
        out.append("")
    if result.get("steps"):
        out += table("One latent step vs one decode step",
                     ["Context", "Latent step ms", "Decode step ms", "Latent / decode", "Prefill tok/s"],
                     [f"| {r['context']} | {r['latent_step_ms']:.1f} | {r['decode_step_ms']:.1f} | "
                      f"{r['latent_over_decode']:.2f} | {r['prefill_tokens_per_s']:.0f} |" for r in result["steps"]])
    if result.get("batching"):
        out += table("latent_mas throughput by batch size",
                     ["generate_bs", "Items", "Seconds", "Items/s", "vs first", "Greedy outputs equal to the first size's"],
                     [f"| {r['generate_bs']} | {r['items']} | {r['seconds']:.1f} | {r['items_per_s']:.3f} | "
                      f"{r['vs_bs1']:.2f}x | {r.get('same_outputs_as_first', '-')}/{r['items']} |"
                      for r in result["batching"]])
    if result.get("throughput"):
        out += table("Decode throughput by backend (greedy, same prompts)",
                     ["Backend", "dtype", "Batch", "Tokens", "Seconds", "Tokens/s", "Rows identical to the first backend's"],
                     [f"| {r['backend']} | {r['dtype']} | {r['batch']} | {r['tokens']} | {r['seconds']:.1f} | "
                      f"{r['tokens_per_s']:.1f} | {r['rows_identical_to_first']}/{r['batch']} |"
                      for r in result["throughput"]])
    if result.get("paper"):
        out += table("TextMAS on vLLM vs LatentMAS (sequential, fp32, greedy)",
                     ["Method", "Decoder", "Accuracy", "Output tokens", "Seconds", "Tokens vs TextMAS",
                      "Speed-up vs TextMAS"],
                     [f"| {r['method']} | {r['decoder']} | {r['correct']}/{r['items']} | {r['output_tokens']} | "
                      f"{r['seconds']:.1f} | {r.get('tokens_vs_text_mas', float('nan')):.3f} | "
                      f"{r.get('speedup_vs_text_mas', float('nan')):.2f}x |" for r in result["paper"]])
    if result.get("memory"):
        out += ["## KV memory", "", "| Topology | After | Positions | KV MB / item |", "|---|---|---|---|"]
        out += [f"| {r['topology']} | {r['after']} | {r['positions']} | {r['kv_bytes_per_item'] / 2**20:.2f} |"
                for r in result["memory"] if "kv_bytes_per_item" in r]
        peak = [r for r in result["memory"] if "peak_process_bytes" in r]
        if peak:
            out.append(f"\nPeak process memory: {peak[0]['peak_process_bytes'] / 2**30:.2f} GiB")
    return "\n".join(out) + "\n"


def main() -> int:
    p = OneLineParser(description=__doc__.splitlines()[0], formatter_class=DefaultsHelpFormatter)
    add_flags(p, "model_name", "task", "data_dir", "device", "max_samples", "max_new_tokens", "latent_steps",
              "generate_bs", "seed", "output_dir")
    p.add_argument("--contexts", type=int, nargs="+", default=[200, 800])
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--batching_max_new_tokens", type=int, default=None, help="default: --max_new_tokens")
    p.add_argument("--sections", nargs="+", default=["steps", "batching", "memory", "methods"],
                   choices=["steps", "batching", "memory", "methods"])
    p.add_argument("--methods_from", nargs="+", default=None, metavar="RUN_DIR",
                   help="fill the methods section from finished run.py folders (same settings) instead of running it")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--backend", nargs="+", default=None, choices=["hf", "vllm"],
                   help="run the throughput and paper sections on these backends instead of --sections")
    p.add_argument("--throughput_batch_sizes", type=int, nargs="+", default=[1, 8, 20])
    p.add_argument("--throughput_max_new_tokens", type=int, default=32)
    p.add_argument("--max_model_len", type=int, default=4096, help="vLLM's longest sequence (prompt + output)")
    add_flags(p, "vllm_kv_cache_gib")
    args = p.parse_args()
    fill_run_defaults(args)
    single_seed(args)
    if args.max_samples is None:
        raise UsageError("--max_samples: give the number of items to benchmark (e.g. 10)")
    if args.threads:
        torch.set_num_threads(args.threads)  # on a shared machine, 1 thread avoids spin-wait oversubscription

    if args.backend and "vllm" in args.backend:
        from vllm_backend import vllm_problem

        if problem := vllm_problem():
            raise UsageError(problem)
    out = Path(args.output_dir or "benchmarks/latest")
    out.mkdir(parents=True, exist_ok=True)
    task = get_task(args.task)
    if args.backend:
        items = load_task(args.task, data_dir=args.data_dir,
                          max_samples=max(args.max_samples, max(args.throughput_batch_sizes)))
        result = {"settings": {**vars(args), "device": args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
                               "threads": torch.get_num_threads(), **library_versions()}}
        engines: dict = {}
        result["throughput"] = bench_throughput(args, items, task, engines)
        result["paper"] = bench_paper(args, items[: args.max_samples], task, engines)
        if "vllm" in engines:
            result["settings"]["vllm"] = engines["vllm"].describe()
        (out / "benchmark.json").write_text(json.dumps(result, indent=2))
        (out / "benchmark.md").write_text(markdown(result))
        print(markdown(result))
        return 0
    from_runs = methods_from_runs(args.methods_from, args) if args.methods_from else None  # checked before any work
    items = load_task(args.task, data_dir=args.data_dir, max_samples=max(args.max_samples, max(args.batch_sizes)))
    model = ModelWrapper.from_pretrained(args.model_name, device=args.device)
    result = {"settings": {**vars(args), "device": str(model.device), "dtype": str(model.model.dtype),
                           "threads": torch.get_num_threads(), **library_versions()}}
    if "steps" in args.sections:
        result["steps"] = bench_steps(model, args.contexts, args.reps)
    if "batching" in args.sections:
        result["batching"] = bench_batching(model, items, task, args)
    if "memory" in args.sections:
        result["memory"] = bench_memory(model, items, task, args)
    if from_runs:
        result["methods"] = from_runs
    elif "methods" in args.sections:
        result["methods"] = bench_methods(model, items[: args.max_samples], task, args, out)
    (out / "benchmark.json").write_text(json.dumps(result, indent=2))
    (out / "benchmark.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(one_line_errors(main, "benchmark.py"))
