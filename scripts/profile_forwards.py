"""Where latent_mas spends its time: wall seconds per kind of forward (prefill, latent step, decode step) and batch
rows, at each --generate_bs, on the same items. The README's "Performance" section quotes its output.

    python scripts/profile_forwards.py --data_dir ../shared/data --max_samples 10 --batch_sizes 1 4
"""

from __future__ import annotations

import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data import get_task, load_task  # noqa: E402
from methods import METHODS, MethodSettings  # noqa: E402
from models import ModelWrapper  # noqa: E402
from prompts import PromptBook  # noqa: E402
from errors import OneLineParser, one_line_errors  # noqa: E402
from flags import DefaultsHelpFormatter, add_flags, fill_run_defaults  # noqa: E402

# (kind, rows) -> [calls, seconds, real tokens]
STATS: dict[tuple[str, int], list] = collections.defaultdict(lambda: [0, 0.0, 0])


def timed(name: str, step_kind: str):
    """Wrap ModelWrapper.<name> so that every call adds its wall time to STATS."""
    inner = getattr(ModelWrapper, name)

    def forward(self, new_mask, memory, **inputs):
        start = time.perf_counter()
        result = inner(self, new_mask, memory, **inputs)
        kind = step_kind if new_mask.shape[1] == 1 else "prefill"
        entry = STATS[(kind, new_mask.shape[0])]
        entry[0] += 1
        entry[1] += time.perf_counter() - start
        entry[2] += int(new_mask.sum())
        return result

    setattr(ModelWrapper, name, forward)


def main() -> int:
    p = OneLineParser(description=__doc__.splitlines()[0], formatter_class=DefaultsHelpFormatter)
    add_flags(p, "model_name", "task", "data_dir", "max_samples", "max_new_tokens", "latent_steps")
    p.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 4], help="--generate_bs values to profile")
    args = p.parse_args()
    fill_run_defaults(args)

    task = get_task(args.task)
    items = load_task(args.task, data_dir=args.data_dir, max_samples=args.max_samples)
    model = ModelWrapper.from_pretrained(args.model_name)
    timed("_forward_hidden", "latent step")  # the decoder body: latent steps, and prefills
    timed("_forward_logits", "decode step")  # with the LM head: decode steps, and the judger's prefill
    settings = MethodSettings(max_new_tokens=args.max_new_tokens, temperature=0.0, latent_steps=args.latent_steps)
    method = METHODS["latent_mas"](model, settings, PromptBook.load())
    for bs in args.batch_sizes:
        STATS.clear()
        start = time.perf_counter()
        for i in range(0, len(items), bs):
            method.run_batch(items[i:i + bs], task.answer_kind)
        total = time.perf_counter() - start
        inside = sum(seconds for _, seconds, _ in STATS.values())
        print(f"generate_bs {bs}: {total:.1f} s; outside the forwards {total - inside:.1f} s "
              f"({100 * (total - inside) / total:.1f}%)")
        for (kind, rows), (calls, seconds, tokens) in sorted(STATS.items()):
            print(f"  {kind:12s} rows {rows:3d}: {calls:5d} calls {seconds:7.1f} s ({100 * seconds / total:4.1f}%) "
                  f"{1000 * seconds / calls:8.1f} ms/call {tokens:6d} real tokens")
    return 0


if __name__ == "__main__":
    sys.exit(one_line_errors(main, "profile_forwards.py"))
