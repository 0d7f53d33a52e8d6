"""Check the vLLM backend against the HF path: greedy agreement and speed on GSM8K, on CPU or a GPU.

    python scripts/vllm_check.py --data_dir ../shared/data --max_samples 50 --max_new_tokens 512 --generate_bs 16

Needs vLLM (bash scripts/install.sh --vllm); both backends load the same weights (a packaged model by default) in
the same dtype (vLLM first, with --gpu_memory_utilization on CUDA or --vllm_kv_cache_gib).
Measured, all greedy (temperature 0):
1. baseline prompts, HF generate vs vLLM token prompts: share of identical outputs, token agreement rate (mean of
   common-prefix length / longer length; and position-wise matches / longer length), accuracy of each, and
   wall seconds of each on the same batches (speed ratio = HF seconds / vLLM seconds);
2. vLLM prompt-embeds input carrying plain token embeddings vs its token input (expected identical), and the
   same for HF generate_embeds vs generate;
3. latent_mas (--latent_steps, sequential): the HF KV hand-off path against the vLLM judger in the `kv` layout
   (expected identical up to float rounding) and in the `reference` layout (the reference's splice), with timings.
Prints one JSON object (also written to <output_dir>/vllm_check.json) and a Markdown table for the README.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from errors import OneLineParser  # noqa: E402
from flags import DefaultsHelpFormatter, add_flags, fill_run_defaults  # noqa: E402


def agreement(a_rows, b_rows) -> dict:
    """Identical share, mean common-prefix agreement and mean position-wise agreement of two lists of token rows."""
    prefix, positional, same = [], [], 0
    for a, b in zip(a_rows, b_rows):
        longest = max(len(a), len(b), 1)
        prefix.append(sum(1 for _ in itertools.takewhile(lambda ab: ab[0] == ab[1], zip(a, b))) / longest)
        positional.append(sum(x == y for x, y in zip(a, b)) / longest)
        same += list(a) == list(b)
    n = max(len(prefix), 1)
    return {"rows": len(prefix), "identical_share": same / n, "prefix_agreement": sum(prefix) / n,
            "positional_agreement": sum(positional) / n}


def timed(fn):
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - start


def batches(seq, size):
    return [seq[i:i + size] for i in range(0, len(seq), size)]


def merge(gens):
    from models import Generation

    return Generation([t for g in gens for t in g.texts], [i for g in gens for i in g.token_ids],
                      [n for g in gens for n in g.num_tokens])


def main(argv=None) -> int:
    p = OneLineParser(description=__doc__.splitlines()[0], formatter_class=DefaultsHelpFormatter)
    add_flags(p, "model_name", "data_dir", "max_samples", "latent_steps", "max_new_tokens", "generate_bs",
              "gpu_memory_utilization", "vllm_kv_cache_gib", "device", "output_dir")
    p.add_argument("--latent_n", type=int, default=20, help="items for the latent_mas comparison (0: skip)")
    args = p.parse_args(argv)
    args.task = "gsm8k"
    fill_run_defaults(args)

    from vllm_backend import vllm_problem

    problem = vllm_problem()
    if problem:
        print(f"vllm_check.py: error: {problem}", file=sys.stderr)
        return 2

    import torch

    from data import get_task
    from methods import METHODS, MethodSettings
    from models import ModelWrapper
    from provenance import library_versions
    from prompts import PromptBook
    from engine import HFEngine
    from splice import embed_ids, token_ids
    from vllm_backend import VLLMEngine, memory_settings, vllm_dtype

    cuda = torch.cuda.is_available()
    engine_kwargs = dict(memory=memory_settings(cuda, args.vllm_kv_cache_gib, args.gpu_memory_utilization),
                         enable_prompt_embeds=True, dtype=vllm_dtype("auto"))
    skeleton = ModelWrapper.without_weights(args.model_name)
    engine = VLLMEngine(skeleton.source.path, skeleton.tokenizer, skeleton.eos_token_ids, **engine_kwargs)
    hf = ModelWrapper.from_pretrained(args.model_name, device=args.device or ("cuda:0" if cuda else "cpu"))
    book = PromptBook.load()
    gsm8k = get_task("gsm8k")
    items = gsm8k.load(data_dir=args.data_dir, max_samples=args.max_samples)
    prompts = [hf.render_chat(book.messages("single", it["question"], "number")) for it in items]
    greedy = dict(max_new_tokens=args.max_new_tokens)  # no sampling config: greedy on both backends
    accuracy = lambda texts, its: sum(s.correct for s in gsm8k.score_batch(texts, its)) / max(len(its), 1)

    engine.generate(prompts[:1], max_new_tokens=8)  # warm-up (graphs, caches)
    hf.generate(*hf.encode(prompts[:1]), max_new_tokens=8)
    hf_gen, hf_s = timed(lambda: merge([hf.generate(*hf.encode(b), **greedy) for b in batches(prompts, args.generate_bs)]))
    vl_gen, vl_s = timed(lambda: merge([engine.generate(b, **greedy) for b in batches(prompts, args.generate_bs)]))
    vl_all, vl_all_s = timed(lambda: engine.generate(prompts, **greedy))
    embeds = [embed_ids(hf, token_ids(hf, t)) for t in prompts]
    vl_emb = merge([engine.generate_embeds(b, **greedy) for b in batches(embeds, args.generate_bs)])
    hf_emb = merge([hf.generate_embeds(b, **greedy) for b in batches(embeds, args.generate_bs)])
    report = {
        "model": args.model_name, "model_path": skeleton.source.path,
        "device": engine.describe()["device"],
        "versions": {**library_versions(), "vllm": engine.version}, "dtype": engine_kwargs["dtype"],
        "items": len(items), "max_new_tokens": args.max_new_tokens, "batch_size": args.generate_bs,
        "baseline": {
            "vllm_vs_hf": agreement(hf_gen.token_ids, vl_gen.token_ids),
            "hf_accuracy": accuracy(hf_gen.texts, items), "vllm_accuracy": accuracy(vl_gen.texts, items),
            "hf_output_tokens": sum(hf_gen.num_tokens), "vllm_output_tokens": sum(vl_gen.num_tokens),
            "hf_seconds": round(hf_s, 3), "vllm_seconds": round(vl_s, 3), "speed_ratio": round(hf_s / vl_s, 2),
            "vllm_seconds_one_call": round(vl_all_s, 3), "speed_ratio_one_call": round(hf_s / vl_all_s, 2),
        },
        "embeds_input": {"vllm_embeds_vs_vllm_tokens": agreement(vl_gen.token_ids, vl_emb.token_ids),
                         "hf_embeds_vs_hf_tokens": agreement(hf_gen.token_ids, hf_emb.token_ids)},
    }
    if args.latent_n > 0:
        its = items[:args.latent_n]
        settings = MethodSettings(max_new_tokens=args.max_new_tokens, temperature=0.0, top_p=1.0,
                                  latent_steps=args.latent_steps)
        run = lambda eng: timed(lambda: [o for b in batches(its, args.generate_bs)
                                         for o in METHODS["latent_mas"](hf, settings, book, engine=eng).run_batch(b, "number")])
        kv, kv_s = run(HFEngine(hf))
        vl_kv, vl_kv_s = run(engine)
        engine.judger_layout = "reference"
        vl_ref, vl_ref_s = run(engine)
        ids = lambda outs: [token_ids(hf, o.final_text) for o in outs]
        texts = lambda outs: [o.final_text for o in outs]
        report["latent_mas"] = {
            "items": len(its), "latent_steps": args.latent_steps,
            "vllm_kv_layout_vs_hf_kv": agreement(ids(kv), ids(vl_kv)),
            "vllm_reference_layout_vs_hf_kv": agreement(ids(kv), ids(vl_ref)),
            "accuracy": {"hf_kv": accuracy(texts(kv), its), "vllm_kv_layout": accuracy(texts(vl_kv), its),
                         "vllm_reference_layout": accuracy(texts(vl_ref), its)},
            "seconds": {"hf_kv": round(kv_s, 3), "vllm_kv_layout": round(vl_kv_s, 3),
                        "vllm_reference_layout": round(vl_ref_s, 3)},
        }
    out = Path(args.output_dir or ".")
    out.mkdir(parents=True, exist_ok=True)
    (out / "vllm_check.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    b = report["baseline"]
    print(f"\n| {args.model_name} | {report['device']} | vLLM {engine.version} | {len(items)} GSM8K items | "
          f"identical {b['vllm_vs_hf']['identical_share']:.0%} | token agreement "
          f"{b['vllm_vs_hf']['prefix_agreement']:.0%} | HF {b['hf_seconds']:.1f} s, vLLM {b['vllm_seconds']:.1f} s "
          f"(x{b['speed_ratio']}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
