"""The published LatentMAS figures (arXiv 2511.20639, Tables 1-3 as restated in shared/docs/paper.md) as data.

Every row gives, for Single / Text-MAS / LatentMAS: accuracy (%), output tokens and wall-clock seconds.

Units, and how report.py compares them with ours:
- Accuracy: percent, mean of 3 runs at temperature 0.6 over the full split.
- Tokens: paper.md says "total output tokens per run; for LatentMAS this equals the judger's output only". The
  magnitudes cannot be per-run totals, though: ARC-Easy has 2,376 test items and the Single model is listed at
  724 tokens, i.e. well under one token per item if it were a total, while a Qwen3 answer with reasoning is
  hundreds of tokens long. So the figures are *average output tokens per item* (summed over all agents for
  Text-MAS; the judger only for LatentMAS, the only agent that decodes text). We therefore compare them with
  our summary's `avg_output_tokens` (= total_output_tokens / n; for latent_mas the non-judger agents emit no
  tokens, so it is the judger's output per item, matching the paper's definition).
- Time: wall-clock seconds for one full benchmark run (after model load; Text-MAS on vLLM). Our runs are often
  small samples, so report.py compares per-item times: `seconds / SPLIT_SIZES[task]` against our
  `seconds_per_item`. Absolute times depend on hardware and backend; the speed-up ratio is the comparable figure.
"""

from __future__ import annotations

from dataclasses import dataclass

METHODS = ("baseline", "text_mas", "latent_mas")  # our method names, in the paper's column order

# Our task names (data.py) -> the paper's table labels.
TASK_LABELS = {
    "gsm8k": "GSM8K", "arc_easy": "ARC-E", "arc_challenge": "ARC-C", "medqa": "MedQA", "mbppplus": "MBPP+",
    "humanevalplus": "HumanEval+", "aime2024": "AIME24", "aime2025": "AIME25", "gpqa": "GPQA-D",
}

# Only the exact checkpoints the paper used get a paper row: another model (or a quantised/renamed copy whose
# identity we cannot check) would make the side-by-side figures misleading.
MODEL_SIZES = {"Qwen/Qwen3-4B": "4B", "Qwen/Qwen3-8B": "8B", "Qwen/Qwen3-14B": "14B"}

# Items in the full evaluation split (paper.md, "Splits"): turns per-run seconds into seconds per item.
SPLIT_SIZES = {
    "GSM8K": 1319, "AIME24": 30, "AIME25": 30, "GPQA-D": 198, "ARC-E": 2376, "ARC-C": 1172, "MBPP+": 378,
    "HumanEval+": 164, "MedQA": 300,
}


@dataclass(frozen=True)
class Figures:
    """One method's published figures in one row."""
    accuracy: float  # percent
    tokens: int  # average output tokens per item (see the module docstring)
    seconds: int  # wall-clock seconds for the full split
    seconds_per_item: float


@dataclass(frozen=True)
class PaperRow:
    topology: str  # "sequential" | "hierarchical"
    task: str  # paper label, e.g. "GSM8K"
    model: str  # "4B" | "8B" | "14B"
    accuracy: tuple[float, float, float]  # Single, Text-MAS, LatentMAS
    tokens: tuple[int, int, int]
    seconds: tuple[int, int, int]

    def figures(self, method: str) -> Figures:
        i = METHODS.index(method)
        return Figures(self.accuracy[i], self.tokens[i], self.seconds[i], self.seconds[i] / SPLIT_SIZES[self.task])


# (topology, task, model, accuracy %, output tokens per item, seconds per run), each Single / Text-MAS / LatentMAS.
_ROWS = [
    # Table 1: sequential
    ("sequential", "ARC-E", "4B", (95.4, 96.4, 98.6), (724, 2420, 581), (369, 2874, 512)),
    ("sequential", "ARC-E", "8B", (95.6, 99.1, 98.8), (656, 2085, 490), (404, 3702, 1759)),
    ("sequential", "ARC-E", "14B", (97.2, 99.0, 99.4), (608, 1670, 224), (551, 9171, 2124)),
    ("sequential", "ARC-C", "4B", (89.2, 90.0, 92.3), (913, 2678, 718), (97, 1579, 260)),
    ("sequential", "ARC-C", "8B", (91.0, 94.6, 94.4), (846, 2252, 529), (266, 2059, 703)),
    ("sequential", "ARC-C", "14B", (92.6, 95.9, 95.6), (773, 2985, 426), (338, 5125, 1136)),
    ("sequential", "GSM8K", "4B", (82.4, 89.8, 88.2), (1136, 3172, 607), (469, 1970, 375)),
    ("sequential", "GSM8K", "8B", (81.1, 92.3, 93.8), (1280, 2324, 860), (449, 1739, 543)),
    ("sequential", "GSM8K", "14B", (83.7, 93.8, 95.2), (1118, 3324, 644), (536, 3729, 1952)),
    ("sequential", "MedQA", "4B", (47.7, 65.3, 66.3), (2134, 3962, 1685), (236, 1267, 438)),
    ("sequential", "MedQA", "8B", (53.0, 75.0, 75.3), (2098, 4260, 1555), (476, 1923, 928)),
    ("sequential", "MedQA", "14B", (64.7, 80.3, 80.7), (1746, 3444, 1841), (1360, 4142, 1420)),
    ("sequential", "MBPP+", "4B", (63.5, 69.8, 73.5), (1634, 4420, 1339), (523, 2148, 577)),
    ("sequential", "MBPP+", "8B", (64.8, 69.5, 74.6), (2053, 3695, 1164), (1064, 3628, 1275)),
    ("sequential", "MBPP+", "14B", (68.5, 72.8, 75.7), (1858, 4971, 1621), (2410, 8728, 2400)),
    ("sequential", "HumanEval+", "4B", (75.0, 79.7, 79.9), (2380, 5987, 1775), (274, 1044, 350)),
    ("sequential", "HumanEval+", "8B", (74.4, 80.5, 80.5), (2507, 4593, 1866), (502, 1619, 497)),
    ("sequential", "HumanEval+", "14B", (76.8, 81.1, 86.5), (2366, 5934, 2042), (1084, 4062, 1285)),
    # Table 2: hierarchical
    ("hierarchical", "ARC-E", "4B", (95.4, 97.1, 96.8), (724, 2054, 363), (369, 2239, 591)),
    ("hierarchical", "ARC-E", "8B", (95.6, 98.2, 98.3), (656, 2237, 308), (404, 3619, 1779)),
    ("hierarchical", "ARC-E", "14B", (97.2, 98.3, 98.7), (608, 2752, 619), (551, 7102, 1884)),
    ("hierarchical", "ARC-C", "4B", (89.2, 92.5, 91.7), (913, 2674, 447), (97, 1275, 299)),
    ("hierarchical", "ARC-C", "8B", (91.0, 93.3, 93.9), (846, 2854, 344), (266, 2034, 714)),
    ("hierarchical", "ARC-C", "14B", (92.6, 95.3, 95.5), (773, 2167, 295), (338, 4283, 1090)),
    ("hierarchical", "GSM8K", "4B", (82.4, 89.4, 88.4), (1136, 3098, 555), (469, 1878, 360)),
    ("hierarchical", "GSM8K", "8B", (81.1, 90.4, 89.5), (1280, 2370, 353), (449, 1365, 702)),
    ("hierarchical", "GSM8K", "14B", (83.7, 90.8, 91.6), (1118, 3021, 495), (536, 3675, 1631)),
    ("hierarchical", "MedQA", "4B", (47.7, 65.0, 67.3), (2134, 6702, 1015), (236, 1495, 557)),
    ("hierarchical", "MedQA", "8B", (53.0, 76.3, 77.0), (2098, 6893, 1007), (476, 3387, 964)),
    ("hierarchical", "MedQA", "14B", (64.7, 78.0, 78.3), (1746, 5473, 899), (1360, 7591, 1250)),
    ("hierarchical", "MBPP+", "4B", (63.5, 69.3, 70.6), (1634, 6782, 1339), (523, 1766, 489)),
    ("hierarchical", "MBPP+", "8B", (64.8, 71.9, 72.2), (2053, 7703, 1264), (1064, 3898, 1387)),
    ("hierarchical", "MBPP+", "14B", (68.5, 73.0, 73.8), (1858, 7458, 1187), (2410, 9162, 2507)),
    ("hierarchical", "HumanEval+", "4B", (75.0, 76.2, 79.3), (2380, 8127, 1373), (274, 931, 333)),
    ("hierarchical", "HumanEval+", "8B", (74.4, 76.8, 78.0), (2507, 8768, 1274), (502, 1809, 439)),
    ("hierarchical", "HumanEval+", "14B", (76.8, 84.1, 86.6), (2366, 8114, 1512), (1084, 3988, 1188)),
    # Table 3: reasoning-intensive tasks (no 4B figures were published)
    ("sequential", "AIME24", "8B", (50.0, 53.3, 56.7), (12891, 38596, 8953), (421, 2808, 688)),
    ("sequential", "AIME24", "14B", (63.3, 63.3, 66.7), (11263, 32092, 10593), (1018, 4554, 1149)),
    ("sequential", "AIME25", "8B", (46.7, 53.3, 53.3), (14692, 45088, 8699), (450, 3150, 820)),
    ("sequential", "AIME25", "14B", (56.7, 60.0, 63.3), (11298, 44618, 11402), (1040, 5184, 1473)),
    ("sequential", "GPQA-D", "8B", (39.9, 43.4, 45.5), (6435, 17986, 4571), (813, 5771, 854)),
    ("sequential", "GPQA-D", "14B", (48.5, 51.5, 52.0), (5547, 12676, 5454), (1043, 9714, 1475)),
    ("hierarchical", "AIME24", "8B", (50.0, 53.3, 53.3), (12891, 42629, 7526), (421, 3132, 776)),
    ("hierarchical", "AIME24", "14B", (63.3, 70.0, 73.3), (11263, 29025, 10230), (1018, 5718, 1089)),
    ("hierarchical", "AIME25", "8B", (46.7, 50.0, 50.0), (14692, 53929, 13230), (450, 3488, 616)),
    ("hierarchical", "AIME25", "14B", (56.7, 66.7, 66.7), (11298, 50003, 9527), (1040, 6019, 1056)),
    ("hierarchical", "GPQA-D", "8B", (39.9, 43.0, 46.9), (6435, 22450, 3395), (813, 6108, 798)),
    ("hierarchical", "GPQA-D", "14B", (48.5, 52.0, 53.0), (5547, 20931, 3606), (1043, 9119, 1458)),
]

PAPER_ROWS: dict[tuple[str, str, str], PaperRow] = {
    (topology, task, model): PaperRow(topology, task, model, acc, tok, sec)
    for topology, task, model, acc, tok, sec in _ROWS
}


def lookup(task: str, model_name: str, topology: str) -> PaperRow | None:
    """The published row for our task name, model name and topology, or None when the paper has none."""
    label, size = TASK_LABELS.get(task), MODEL_SIZES.get(model_name)
    if label is None or size is None:
        return None
    return PAPER_ROWS.get((topology, label, size))
