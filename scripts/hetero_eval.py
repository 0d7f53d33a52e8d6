"""Heterogeneous LatentMAS on GSM8K: each model alone beside the bridged pairs, plus the bridges' quality.

    python scripts/hetero_eval.py --data_dir ../shared/data --max_samples 10 --max_new_tokens 256 --latent_steps 5

Rows (all greedy, same items, through the library API):
  single        one agent, the CLI's baseline prompt
  latent_mas    two agents of one model (planner -> judger, exact KV hand-off)
  bridged       planner of one model -> judger of the other (latent thoughts through the ridge bridge)
Bridges: held-out nearest-neighbour accuracy of each direction against chance. Seconds: wall-clock of the
generate call over all items (bridge fitting excluded). Writes <output_dir>/hetero_eval.json (default
outputs/hetero_eval); finished rows also go to <output_dir>/rows.jsonl as they finish, and a rerun with the same
--output_dir skips them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data import get_task  # noqa: E402
from errors import OneLineParser, one_line_errors  # noqa: E402
from flags import DefaultsHelpFormatter, add_flags, fill_run_defaults  # noqa: E402
from latentmas import LatentMAS  # noqa: E402
from models import ModelWrapper  # noqa: E402
from provenance import library_versions  # noqa: E402

MODELS = {"qwen": "Qwen/Qwen2.5-Coder-0.5B-Instruct", "smol": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def main() -> int:
    p = OneLineParser(description=__doc__.splitlines()[0], formatter_class=DefaultsHelpFormatter)
    add_flags(p, "data_dir", "max_samples", "max_new_tokens", "latent_steps", "generate_bs", "output_dir")
    p.add_argument("--rows", nargs="+", default=["single", "latent_mas", "bridged"], help="which kinds of rows to run")
    args = p.parse_args()
    args.task = "gsm8k"
    fill_run_defaults(args)
    out = Path(args.output_dir or "outputs/hetero_eval")
    out.mkdir(parents=True, exist_ok=True)
    done_path = out / "rows.jsonl"  # one line per finished row: a rerun with the same --output_dir skips those rows
    done = {(r["method"], r["agents"]): r for r in map(json.loads, done_path.read_text().splitlines())} \
        if done_path.exists() else {}
    torch.manual_seed(0)
    gsm8k = get_task("gsm8k")
    items = gsm8k.load(data_dir=args.data_dir, max_samples=args.max_samples)
    questions = [item["question"] for item in items]
    wrappers = {key: ModelWrapper.from_pretrained(name) for key, name in MODELS.items()}
    short = {key: name.split("/")[-1] for key, name in MODELS.items()}

    bridges = []
    for sender, receiver in (("qwen", "smol"), ("smol", "qwen")):
        mas = LatentMAS([wrappers[sender], wrappers[receiver]], evaluate_bridges=True)
        report = mas.bridge(0, 1).report
        bridges.append(report)
        print(f"bridge {short[sender]} -> {short[receiver]}: {report['shared_tokens']} shared tokens, "
              f"{report['heldout_tokens']} held out; NN top-1 {report['nn_top1_all']:.3f} among all "
              f"{report['candidates_all']} receiver tokens (chance {report['chance_all']:.2e}), top-5 "
              f"{report['nn_top5_all']:.3f}; top-1 {report['nn_top1_shared']:.3f} among the "
              f"{report['candidates_shared']} shared tokens (chance {report['chance_shared']:.2e})", flush=True)

    configs = [
        ("single", [short["qwen"]], [wrappers["qwen"]], ["single"]),
        ("single", [short["smol"]], [wrappers["smol"]], ["single"]),
        ("latent_mas", [short["qwen"]] * 2, [wrappers["qwen"]] * 2, None),
        ("latent_mas", [short["smol"]] * 2, [wrappers["smol"]] * 2, None),
        ("bridged", [short["qwen"], short["smol"]], [wrappers["qwen"], wrappers["smol"]], None),
        ("bridged", [short["smol"], short["qwen"]], [wrappers["smol"], wrappers["qwen"]], None),
    ]
    rows = []
    for kind, names, agents, roles in configs:
        if kind not in args.rows:
            continue
        if (kind, " -> ".join(names)) in done:
            rows.append(done[(kind, " -> ".join(names))])
            continue
        mas = LatentMAS(agents, latent_steps=args.latent_steps, roles=roles)
        if kind == "bridged":
            mas.bridge(0, 1)  # fit before timing: a fit is a one-off set-up cost, like loading the models
        result = mas.generate(questions, max_new_tokens=args.max_new_tokens, temperature=0, batch_size=args.generate_bs)
        scored = [(s.prediction, s.correct) for s in gsm8k.score_batch(result.texts, items)]
        row = {"method": kind, "agents": " -> ".join(names), "correct": sum(ok for _, ok in scored), "n": len(items),
               "output_tokens": result.total_output_tokens, "seconds": round(result.seconds, 1),
               "predictions": [pred for pred, _ in scored], "texts": result.texts}
        rows.append(row)
        with done_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{kind:10s} {row['agents']:60s} acc {row['correct']}/{row['n']} tokens {row['output_tokens']} "
              f"seconds {row['seconds']}", flush=True)

    table = ["| Method | Agents (planner -> judger) | Accuracy | Output tokens | Seconds |", "|---|---|---|---|---|"]
    table += [f"| {r['method']} | {r['agents']} | {r['correct']}/{r['n']} | {r['output_tokens']} | {r['seconds']} |"
              for r in rows]
    print("\n".join(table))
    (out / "hetero_eval.json").write_text(json.dumps(
        {"settings": vars(args), "versions": library_versions(), "bridges": bridges, "rows": rows}, indent=2))
    print(f"results: {out / 'hetero_eval.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(one_line_errors(main, "hetero_eval.py"))
