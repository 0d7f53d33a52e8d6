"""Tables of results: the comparison printed at the end of a run, and a report over many runs set beside the paper.

    python report.py RUN_DIR [RUN_DIR ...] --out REPORT_DIR

reads each RUN_DIR/summary.json (written by run.py), merges runs of the same (task, topology, model) whose
result-changing settings agree, and writes REPORT_DIR/report.md, report.csv and report.png in the layout of the
paper's tables: Accuracy / Tokens / Time for Single, TextMAS and LatentMAS, the Improve columns (LatentMAS against
TextMAS), and the published figures where the paper has a row for that task, model and topology. Runs whose
settings differ (max_new_tokens, sampling, seed, thinking, ...) go to separate rows, labelled with the settings
that set them apart, so no ratio spans two settings. Exit code 2, with one line on stderr, for bad input.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from errors import OneLineParser, ReportError, check_output_folder, one_line_errors
from flags import result_keys
from paper_results import METHODS, MODEL_SIZES, PaperRow, lookup

LABELS = {"baseline": "Single", "text_mas": "TextMAS", "latent_mas": "LatentMAS"}
# A summary must give these per method; seconds_per_item is derived when an older summary lacks it.
REQUIRED_METRICS = ("n", "accuracy", "avg_output_tokens", "seconds")
# Settings that change results (flags.py's `result` marks, the same list --resume checks). Runs are merged into one
# row only where they agree, so the Improve ratios never compare two settings; a key a summary lacks (an older
# run.py) counts as its own value. Task, topology and model make the row's key (Run.key); every method of a row
# must agree on the settings that act on all methods (the backend, use_vllm, included):
ROW_KEYS = ("task", "prompt", "model_name")
COMPARABLE_KEYS = tuple(k for k in result_keys("all") if k not in ROW_KEYS)
# TextMAS and LatentMAS must also agree on the topology's details (the single agent has none):
MAS_KEYS = tuple(k for k in result_keys("mas") if k not in ROW_KEYS)
# And each method's own settings: one row per combination (a sweep of m gives one row per m).
METHOD_KEYS = {method: result_keys(method) for method in METHODS}


# ---------------------------------------------------------------- ratios shared by both tables


def token_reduction(text_tokens: float | None, latent_tokens: float | None) -> float | None:
    """Percent fewer output tokens than TextMAS (negative: more); None when undefined."""
    if text_tokens is None or latent_tokens is None or not text_tokens:
        return None
    return 100 * (1 - latent_tokens / text_tokens)


def speedup(text_seconds: float | None, latent_seconds: float | None) -> float | None:
    """How many times faster than TextMAS; None when undefined (a zero time cannot be divided by)."""
    if text_seconds is None or latent_seconds is None or not latent_seconds:
        return None
    return text_seconds / latent_seconds


def comparison_table(methods: dict[str, dict]) -> str:
    """Markdown table, one row per method: accuracy, output tokens per item, seconds, each against text_mas, and
    the share of final texts cut at the token budget (no EOS)."""
    ref = methods.get("text_mas")
    header = ("| Method | Accuracy (%) | Output tokens / item | Seconds | Tokens vs TextMAS | Speed-up vs TextMAS | "
              "Cut at budget (%) |")
    rows = [header, "|---|---|---|---|---|---|---|"]
    for name, m in methods.items():
        fewer = speed = "-"
        if ref and name != "text_mas":
            cut = token_reduction(ref["avg_output_tokens"], m["avg_output_tokens"])
            if cut is not None:
                # "-20% fewer" read badly: say "more" when latent used more tokens.
                fewer = f"{cut:.1f}% fewer" if cut >= 0 else f"{-cut:.1f}% more"
            # Per item, not per run: both methods of one run have the same n, and per item stays right if not.
            ratio = speedup(per_item_seconds(ref), per_item_seconds(m))
            if ratio is not None:
                speed = f"{ratio:.2f}x"
        cut = m.get("cut_at_budget_share")
        rows.append(f"| {LABELS.get(name, name)} | {accuracy_cell(m)} | "
                    f"{m['avg_output_tokens']:.1f} | {m['seconds']:.1f} | {fewer} | {speed} | "
                    f"{'-' if cut is None else f'{100 * cut:.1f}'} |")
    return "\n".join(rows)


def accuracy_cell(m: dict) -> str:
    """'90.0 (9/10)'; with several seeds (stats.aggregate_seeds) the mean, its standard deviation over the seeds,
    and how many seeds and items per seed: '61.1 ± 9.6 (3 seeds x 3 items)'. Tokens and seconds are seed means."""
    if m.get("seeds") and len(m["seeds"]) > 1:
        std = m.get("accuracy_std")
        spread = f" ± {100 * std:.1f}" if std is not None else ""
        return f"{100 * m['accuracy']:.1f}{spread} ({len(m['seeds'])} seeds x {m['n']} items)"
    return f"{100 * m['accuracy']:.1f} ({m.get('correct', '?')}/{m['n']})"


def per_item_seconds(metrics: dict) -> float | None:
    if metrics.get("seconds_per_item") is not None:
        return float(metrics["seconds_per_item"])
    return metrics["seconds"] / metrics["n"] if metrics.get("n") else None


# ---------------------------------------------------------------- reading runs


@dataclass
class Run:
    """One run directory's summary.json."""
    path: Path
    settings: dict
    status: str
    methods: dict[str, dict]

    @property
    def key(self) -> tuple[str, str, str]:
        return tuple(self.settings[k] for k in ROW_KEYS)

    def values(self, keys: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
        """(key, JSON of the value) for each key: hashable, comparable, and a missing key stays distinct."""
        return tuple((k, json.dumps(self.settings[k]) if k in self.settings else "(not recorded)") for k in keys)

    @property
    def latent_steps(self) -> int | None:
        return self.settings.get("latent_steps")


def load_run(run_dir: Path) -> Run:
    """Read and check a summary; every problem becomes a one-line ReportError naming the file."""
    path = run_dir if run_dir.name == "summary.json" else run_dir / "summary.json"
    if not path.is_file():
        raise ReportError(f"{path}: not found (is {run_dir} a run directory written by run.py?)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: not valid JSON ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict) or not isinstance(data.get("settings"), dict) \
            or not isinstance(data.get("methods"), dict):
        raise ReportError(f"{path}: expected an object with 'settings' and 'methods' objects")
    settings = data["settings"]
    for key in ROW_KEYS:
        if not isinstance(settings.get(key), str) or not settings[key]:
            raise ReportError(f"{path}: settings.{key} is missing or not a string")
    for name, metrics in data["methods"].items():
        check_metrics(path, name, metrics)
    return Run(path.parent, settings, str(data.get("status", "unknown")), data["methods"])


def check_metrics(path: Path, name: str, metrics: object) -> None:
    if name not in METHODS:
        raise ReportError(f"{path}: unknown method {name!r} (expected one of {', '.join(METHODS)})")
    if not isinstance(metrics, dict):
        raise ReportError(f"{path}: methods.{name} is not an object")
    for key in REQUIRED_METRICS:
        value = metrics.get(key)
        # bool is an int subclass: reject it explicitly, it is never a metric.
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ReportError(f"{path}: methods.{name}.{key} must be a non-negative number (got {value!r})")
    if metrics["accuracy"] > 1:
        raise ReportError(f"{path}: methods.{name}.accuracy must be a fraction in [0, 1] (got {metrics['accuracy']!r})")


# ---------------------------------------------------------------- merging runs into rows


@dataclass
class Entry:
    """One method's metrics, and the run they come from."""
    run: Run
    metrics: dict


@dataclass
class Row:
    task: str
    topology: str
    model_name: str
    latent_steps: int | None  # of the latent_mas entry; None without one
    entries: dict[str, Entry]
    paper: PaperRow | None
    notes: list[str] = field(default_factory=list)
    # Every result-changing setting of the row, as (key, JSON value) pairs: COMPARABLE_KEYS, and MAS_KEYS and
    # METHOD_KEYS of the methods present.
    settings: dict[str, str] = field(default_factory=dict)
    distinct: dict[str, str] = field(default_factory=dict)  # the settings that set it apart from its sibling rows


def pick(entries: list[Entry], what: str, notes: list[str]) -> Entry:
    """Several runs gave the same method: keep the largest sample (the last one given on a tie) and say so."""
    best = max(reversed(entries), key=lambda e: e.metrics["n"])  # max keeps the first maximum: the last run
    for e in entries:
        if e is not best:
            notes.append(f"{what}: {e.run.path} (n={e.metrics['n']}) ignored for {best.run.path} "
                         f"(n={best.metrics['n']})")
    return best


def build_rows(runs: list[Run]) -> list[Row]:
    """One row per (task, topology, model) and result-changing settings (COMPARABLE_KEYS, MAS_KEYS, METHOD_KEYS):
    runs are merged only where those agree, so every ratio compares methods run with the same settings. Several
    latent_steps (an m sweep) give one row per m."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault((*run.key, run.values(COMPARABLE_KEYS)), []).append(run)
    rows = []
    # Sorted by task, then model, then topology: a model's two topologies sit together, as in the paper.
    for (task, topology, model, shared), group in sorted(groups.items(),
                                                         key=lambda kv: (kv[0][0], kv[0][2], kv[0][1], kv[0][3])):
        by_method: dict[str, list[Entry]] = {m: [] for m in METHODS}
        for run in group:
            for name, metrics in run.methods.items():
                if metrics["n"] > 0:  # a method that scored no item yet has nothing to show
                    by_method[name].append(Entry(run, metrics))
        rows += group_rows(task, topology, model, dict(shared), by_method)
    label_split_rows(rows)
    borrow_baselines(rows)
    for row in rows:
        row.notes += status_notes(row)
    return rows


def variants(entries: list[Entry], keys: tuple[str, ...]) -> dict[tuple, list[Entry]]:
    """Entries grouped by their runs' values of `keys`."""
    out: dict[tuple, list[Entry]] = {}
    for e in entries:
        out.setdefault(e.run.values(keys), []).append(e)
    return out


def group_rows(task: str, topology: str, model: str, shared: dict[str, str],
               by_method: dict[str, list[Entry]]) -> list[Row]:
    """The rows of runs that agree on COMPARABLE_KEYS: Single shared by all, then per MAS_KEYS variant one row
    for each combination of a TextMAS and a LatentMAS variant (METHOD_KEYS)."""
    notes: list[str] = []
    baseline = {"baseline": pick(by_method["baseline"], LABELS["baseline"], notes)} if by_method["baseline"] else {}
    paper = lookup(task, model, topology)
    texts, latents = by_method["text_mas"], by_method["latent_mas"]
    if not texts and not latents:
        return [Row(task, topology, model, None, baseline, paper, notes, dict(shared))]
    rows = []
    by_steps = lambda kv: (-1 if kv[1][0].run.latent_steps is None else kv[1][0].run.latent_steps, kv[0])
    for mas_values in sorted({e.run.values(MAS_KEYS) for e in texts + latents}):
        text_variants = variants([e for e in texts if e.run.values(MAS_KEYS) == mas_values], METHOD_KEYS["text_mas"])
        latent_variants = variants([e for e in latents if e.run.values(MAS_KEYS) == mas_values],
                                   METHOD_KEYS["latent_mas"])
        for text_values, text_entries in sorted(text_variants.items()) or [((), [])]:
            for latent_values, latent_entries in sorted(latent_variants.items(), key=by_steps) or [((), [])]:
                row_notes, entries = list(notes), dict(baseline)
                if text_entries:
                    entries["text_mas"] = pick(text_entries, LABELS["text_mas"], row_notes)
                steps = None
                if latent_entries:
                    steps = latent_entries[0].run.latent_steps
                    entries["latent_mas"] = pick(latent_entries, f"LatentMAS m={steps}", row_notes)
                settings = {**shared, **dict(mas_values), **dict(text_values), **dict(latent_values)}
                rows.append(Row(task, topology, model, steps, entries, paper, row_notes, settings))
    return rows


def label_split_rows(rows: list[Row]) -> None:
    """Rows of one (task, topology, model) that differ in a setting other than m get that setting as their label,
    and a note says why they are apart."""
    siblings: dict[tuple[str, str, str], list[Row]] = {}
    for row in rows:
        siblings.setdefault((row.task, row.topology, row.model_name), []).append(row)
    for group in siblings.values():
        keys = {k for row in group for k in row.settings}
        differing = sorted(k for k in keys if k != "latent_steps"
                           and len({row.settings.get(k) for row in group if k in row.settings}) > 1)
        for row in group:
            row.distinct = {k: row.settings[k] for k in differing if k in row.settings}
            if row.distinct:
                row.notes.append(f"runs of this task, topology and model differ in {', '.join(differing)}: kept in "
                                 "separate rows, so no ratio compares two settings")


def borrow_baselines(rows: list[Row]) -> None:
    """The single agent ignores the topology (the paper prints the same Single figures in both tables), so a row
    without its own baseline takes the one of the same task, model and COMPARABLE_KEYS from the other topology."""
    for row in rows:
        if "baseline" in row.entries:
            continue
        shared = [row.settings.get(k) for k in COMPARABLE_KEYS]
        donor = next((r.entries["baseline"] for r in rows if "baseline" in r.entries and r.task == row.task
                      and r.model_name == row.model_name and r.topology != row.topology
                      and [r.settings.get(k) for k in COMPARABLE_KEYS] == shared), None)
        if donor is not None:
            row.entries = {"baseline": donor, **row.entries}
            row.notes.append(f"Single taken from the {donor.run.settings['prompt']} run {donor.run.path} "
                             "(the single agent has no topology)")


def status_notes(row: Row) -> list[str]:
    """Say where a merged run did not finish."""
    runs = {id(e.run): e.run for e in row.entries.values()}.values()
    return [f"{r.path} has status {r.status!r}: only the methods it completed are included"
            for r in runs if r.status != "finished"]


def settings_label(row: Row) -> str:
    """'max_new_tokens=512, seed=7': the settings that set a row apart from its siblings ('' when none)."""
    return ", ".join(f"{k}={v}" for k, v in row.distinct.items())


# ---------------------------------------------------------------- one record per row (CSV) and its markdown


def row_record(row: Row) -> dict[str, object]:
    """The row's numbers, ours and the paper's side by side; None where a figure does not exist."""
    rec: dict[str, object] = {"task": row.task, "model_name": row.model_name,
                              "paper_model": MODEL_SIZES.get(row.model_name), "topology": row.topology,
                              "latent_steps": row.latent_steps, "settings": settings_label(row)}
    for m in METHODS:
        e = row.entries.get(m)
        rec[f"{m}_n"] = e.metrics["n"] if e else None
        rec[f"{m}_accuracy"] = 100 * e.metrics["accuracy"] if e else None
        rec[f"{m}_tokens"] = e.metrics["avg_output_tokens"] if e else None
        rec[f"{m}_seconds_per_item"] = per_item_seconds(e.metrics) if e else None
        cut = e.metrics.get("cut_at_budget_share") if e else None
        rec[f"{m}_cut_at_budget_pct"] = None if cut is None else 100 * cut
    for m in METHODS:
        p = row.paper.figures(m) if row.paper else None
        rec[f"paper_{m}_accuracy"] = p.accuracy if p else None
        rec[f"paper_{m}_tokens"] = p.tokens if p else None
        rec[f"paper_{m}_seconds_per_item"] = p.seconds_per_item if p else None
    for prefix in ("", "paper_"):
        rec.update(improvements(rec, prefix))
    rec.update(seed_fields(row))
    rec.update(paired_fields(row))
    rec["runs"] = "; ".join(sorted({str(e.run.path) for e in row.entries.values()}))
    rec["notes"] = "; ".join(row.notes)
    return rec


def improvements(rec: dict, prefix: str) -> dict[str, float | None]:
    """The Improve columns: LatentMAS against TextMAS (accuracy in points, % fewer tokens, speed-up)."""
    text_acc, latent_acc = rec[f"{prefix}text_mas_accuracy"], rec[f"{prefix}latent_mas_accuracy"]
    return {
        f"{prefix}improve_accuracy_pts": None if text_acc is None or latent_acc is None else latent_acc - text_acc,
        f"{prefix}improve_token_reduction_pct": token_reduction(rec[f"{prefix}text_mas_tokens"],
                                                                rec[f"{prefix}latent_mas_tokens"]),
        f"{prefix}improve_speedup": speedup(rec[f"{prefix}text_mas_seconds_per_item"],
                                            rec[f"{prefix}latent_mas_seconds_per_item"]),
    }


def fmt(value: object, kind: str) -> str:
    if value is None:
        return "-"
    v = float(value)  # type: ignore[arg-type]
    if kind == "acc":
        return f"{v:.1f}"
    if kind == "pts":
        return f"{v:+.1f}"
    if kind == "tokens":
        return f"{v:.0f}"
    if kind == "pct":
        return f"{v:.1f}%"
    if kind == "x":
        return f"{v:.2f}x"
    # seconds per item span 0.01 s (tiny models) to minutes (AIME): keep about 3 significant digits.
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def cell(rec: dict, key: str, kind: str) -> str:
    """'ours (paper)' where the paper has the figure, else 'ours'; 'mean ± sd' for a mean over several seeds."""
    ours, paper = fmt(rec[key], kind), rec.get(f"paper_{key}")
    if rec.get(f"{key}_std") is not None:
        ours += f" ± {rec[f'{key}_std']:.1f}"
    return ours if paper is None else f"{ours} ({fmt(paper, kind)})"


def n_cell(rec: dict) -> str:
    """One n when every method saw the same items, else n per method (Single/TextMAS/LatentMAS)."""
    ns = [rec[f"{m}_n"] for m in METHODS]
    present = {n for n in ns if n is not None}
    text = str(present.pop()) if len(present) == 1 else "/".join("-" if n is None else str(n) for n in ns)
    seeds = {rec.get(f"{m}_seeds") for m in METHODS} - {None, 1}
    return text + (f" x {'/'.join(map(str, sorted(seeds)))} seeds" if seeds else "")


COLUMNS = [(f"{LABELS[m]} {what}", f"{m}_{key}", kind) for m in METHODS
           for what, key, kind in (("Acc (%)", "accuracy", "acc"), ("Tokens", "tokens", "tokens"),
                                   ("s/item", "seconds_per_item", "sec"))]
COLUMNS += [("Improve Acc (pts)", "improve_accuracy_pts", "pts"),
            ("Improve Tokens (% fewer)", "improve_token_reduction_pct", "pct"),
            ("Improve Speed-up", "improve_speedup", "x")]


def markdown(rows: list[Row], records: list[dict]) -> str:
    split = any(rec["settings"] for rec in records)  # a Settings column only where rows were kept apart
    head = ["Task", "Model", "Topology", "n", "m"] + (["Settings"] if split else []) + [c[0] for c in COLUMNS]
    lines = ["# LatentMAS results", "", INTRO, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rec in records:
        fixed = [rec["task"], rec["model_name"], rec["topology"], n_cell(rec),
                 "-" if rec["latent_steps"] is None else str(rec["latent_steps"])] + ([rec["settings"]] if split else [])
        lines.append("| " + " | ".join(fixed + [cell(rec, key, kind) for _, key, kind in COLUMNS]) + " |")
    lines += sample_size_notes(records)
    lines += cut_section(records)
    lines += paired_section(records)
    notes = [f"- {rec_label(rec)}: {note}" for row, rec in zip(rows, records) for note in row.notes]
    if notes:
        lines += ["", "## Notes", ""] + notes
    return "\n".join(lines) + "\n"


INTRO = ("Cells read `ours (paper)`; the paper's figures (arXiv 2511.20639, mean of 3 runs on the full split) appear "
         "only where it has a row for that task, model and topology. Tokens: average output tokens per item (for "
         "LatentMAS the judger's, the only agent that emits text). s/item: seconds per item; the paper's per-run "
         "times are divided by the split size, and were measured on other hardware (TextMAS on vLLM), so compare "
         "the speed-up rather than absolute times. Improve: LatentMAS against TextMAS. n: items (per method "
         "Single/TextMAS/LatentMAS when they differ); m: latent steps of the LatentMAS run. A row merges only runs "
         "whose result-changing settings agree; Settings, where shown, names those that set a row apart. A run over "
         "several seeds (`--seed 1 2 3`) shows each figure as the mean over its seeds, accuracy as mean ± standard "
         "deviation, and n as items x seeds.")


def cut_section(records: list[dict]) -> list[str]:
    """The share of final texts cut at the token budget, per row and method (a budget-cut output is credited only
    for an answer it committed to before the cut); rows of runs that did not record it are left out."""
    lines = [f"| {rec_label(rec)} | " + " | ".join(fmt(rec[f"{m}_cut_at_budget_pct"], "pct") for m in METHODS) + " |"
             for rec in records if any(rec[f"{m}_cut_at_budget_pct"] is not None for m in METHODS)]
    if not lines:
        return []
    head = "| Row | " + " | ".join(LABELS[m] for m in METHODS) + " |"
    return ["", "## Outputs cut at the token budget", "", "Share of final texts that reached max_new_tokens "
            "without EOS.", "", head, "|---|" + "---|" * len(METHODS)] + lines


def sample_size_notes(records: list[dict]) -> list[str]:
    """Small samples are noisy: give the worst-case 95% half-width of an accuracy for each n in the table."""
    ns = sorted({rec[f"{m}_n"] for rec in records for m in METHODS if rec[f"{m}_n"]})
    if not ns:
        return []
    widths = ", ".join(f"n={n}: ±{196 * math.sqrt(0.25 / n):.1f} pts" for n in ns)
    return ["", f"Accuracy over n items is uncertain by up to about {widths} (95%, binomial)."]


# ---------------------------------------------------------------- several seeds and paired comparisons


def seed_fields(row: Row) -> dict[str, object]:
    """Per method: how many seeds its figures are the mean of, and the accuracy's standard deviation over them
    (percentage points; None for one seed)."""
    rec: dict[str, object] = {}
    for m in METHODS:
        e = row.entries.get(m)
        std = e.metrics.get("accuracy_std") if e else None
        rec[f"{m}_seeds"] = len(e.metrics.get("seeds") or [None]) if e else None
        rec[f"{m}_accuracy_std"] = None if std is None else 100 * std
    return rec


# The comparisons shown, (first, second): the difference is second - first.
PAIRS = (("text_mas", "latent_mas"), ("baseline", "latent_mas"), ("baseline", "text_mas"))
PAIRED_KEYS = ("items", "seeds", "difference", "ci_low", "ci_high", "better", "worse", "p_value")


def run_seeds(settings: dict) -> list:
    """The seeds of a run: settings.seed is a number for one seed, a list for several."""
    seed = settings.get("seed")
    return list(seed) if isinstance(seed, list) else [seed]


def correctness(run: Run, method: str) -> dict[str, dict]:
    """{item id: {seed: correct}} of one method in a run's predictions.jsonl, limited to the run's items and seeds
    (a resumed folder may hold more); {} when the file is missing (summaries alone cannot be paired)."""
    from stats import correctness_by_item

    path = run.path / "predictions.jsonl"
    if not path.is_file():
        return {}
    seeds = run_seeds(run.settings)
    limit = run.settings.get("max_samples")
    records = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line of a killed run
            r.setdefault("seed", seeds[0])  # records written before --seed took several values
            if r.get("method") == method and r["seed"] in seeds and (not limit or limit < 0 or r["index"] < limit):
                records.append(r)
    return correctness_by_item(records)


def paired_fields(row: Row) -> dict[str, object]:
    """For each pair of methods in the row: the stats.PairedComparison figures, as {second}_vs_{first}_{key}."""
    from stats import compare_paired

    rec: dict[str, object] = {}
    for first, second in PAIRS:
        a, b = row.entries.get(first), row.entries.get(second)
        result = compare_paired(correctness(a.run, first), correctness(b.run, second), first, second) \
            if a and b else None
        for key in PAIRED_KEYS:
            rec[f"{second}_vs_{first}_{key}"] = getattr(result, key) if result else None
    return rec


def paired_section(records: list[dict]) -> list[str]:
    """Markdown: the paired comparisons, one line per pair of methods that ran on shared items."""
    from stats import BOOTSTRAP_RESAMPLES, SIGNIFICANCE

    lines = []
    for rec in records:
        for first, second in PAIRS:
            k = f"{second}_vs_{first}"
            if rec.get(f"{k}_items") is None:
                continue
            p = rec[f"{k}_p_value"]
            real = p < SIGNIFICANCE
            lines.append(f"| {rec_label(rec)} | {LABELS[second]} vs {LABELS[first]} | {rec[f'{k}_items']} x "
                         f"{rec[f'{k}_seeds']} | {rec[f'{k}_difference']:+.1f} | [{rec[f'{k}_ci_low']:+.1f}, "
                         f"{rec[f'{k}_ci_high']:+.1f}] | {rec[f'{k}_better']} / {rec[f'{k}_worse']} | {p:.3g} | "
                         f"{'real' if real else 'within noise'} |")
    if not lines:
        return []
    return ["", "## Paired comparisons", "",
            "Methods that ran on the same items, compared item by item (each item's correctness averaged over the "
            "seeds both ran). Δ: second minus first, accuracy points on the shared items; 95% CI: paired bootstrap "
            f"over items ({BOOTSTRAP_RESAMPLES:,} resamples, fixed seed); won / lost: items the second method got "
            "right more / less often than the first; p: exact McNemar test on those discordant items (with several "
            f"seeds, the exact sign test over items). 'real': p < {SIGNIFICANCE}; otherwise the gap is within the "
            "noise of this sample.", "",
            "| Row | Comparison | Items x seeds | Δ Acc (pts) | 95% CI | Won / lost | p | |",
            "|---|---|---|---|---|---|---|---|", *lines]


def write_csv(path: Path, records: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]) if records else ["task"])
        writer.writeheader()
        for rec in records:
            writer.writerow({k: "" if v is None else round(v, 4) if isinstance(v, float) else v
                             for k, v in rec.items()})


# ---------------------------------------------------------------- the figure

STYLE = {"baseline": ("tab:gray", "o"), "text_mas": ("tab:blue", "s"), "latent_mas": ("tab:red", "^")}


def write_png(path: Path, records: list[dict]) -> None:
    """report_figure as a PNG. The saved area is the figure's tight bounding box, so the row key below the panels
    is never cut off, however long a row's label (its settings) or however many rows."""
    import matplotlib.pyplot as plt

    fig = report_figure(records)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def report_figure(records: list[dict]):
    """Left: accuracy against output tokens per item; right: seconds per item. Filled markers are ours, hollow
    ones the paper's (and a "paper" legend entry only when some are drawn); points carry the row number, and the
    key under the panels names each row in full, one line per row."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    paper_points = 0
    for i, rec in enumerate(records, 1):
        for m, (color, marker) in STYLE.items():
            paper_points += plot_point(left, rec, m, i, "tokens", "accuracy", color, marker)
            paper_points += plot_point(right, rec, m, i, None, "seconds_per_item", color, marker)
    left.set(xlabel="output tokens per item", ylabel="accuracy (%)", title="Accuracy against output tokens")
    right.set(xlabel="row", ylabel="seconds per item", title="Time per item")
    right.set_xticks(range(1, len(records) + 1))
    right.set_xlim(0.5, len(records) + 0.5)
    for ax, axis in ((left, "x"), (right, "y")):
        log_if_wide(ax, axis)
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=c, marker=mk, ls="", label=LABELS[m]) for m, (c, mk) in STYLE.items()]
    if paper_points:
        handles.append(Line2D([], [], color="black", marker="o", ls="", mfc="none", label="paper"))
    left.legend(handles=handles, loc="best", fontsize=8)
    if records:
        # Below the axes, outside the canvas: the tight bounding box of write_png takes it in.
        key = "\n".join(f"{i}: {rec_label(r)}" for i, r in enumerate(records, 1))
        fig.text(0.06, 0.02, key, ha="left", va="top", fontsize=8)
    else:
        left.text(0.5, 0.5, "no results", ha="center", transform=left.transAxes)
    fig.subplots_adjust(left=0.06, right=0.98, top=0.93, bottom=0.12, wspace=0.2)
    return fig


def rec_label(rec: dict) -> str:
    m = "" if rec["latent_steps"] is None else f" m={rec['latent_steps']}"
    topology = {"sequential": "seq", "hierarchical": "hier"}.get(rec["topology"], rec["topology"])
    settings = f" ({rec['settings']})" if rec["settings"] else ""
    return f"{rec['task']} {topology} {rec['model_name'].split('/')[-1]}{m}{settings}"


def plot_point(ax, rec: dict, method: str, i: int, xkey: str | None, ykey: str, color: str, marker: str) -> int:
    """Ours filled, the paper's hollow; on the time panel (xkey None) methods sit side by side around x = i.
    Returns how many of the paper's points it drew (0 or 1)."""
    offset = {"baseline": -0.2, "text_mas": 0.0, "latent_mas": 0.2}[method]
    paper_drawn = 0
    for prefix, filled in (("", True), ("paper_", False)):
        y = rec.get(f"{prefix}{method}_{ykey}")
        x = i + offset if xkey is None else rec.get(f"{prefix}{method}_{xkey}")
        if x is None or y is None:
            continue
        ax.plot([x], [y], marker=marker, color=color, ls="", ms=8, mfc=color if filled else "none")
        paper_drawn += not filled
        if filled and xkey is not None:
            ax.annotate(str(i), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8, color=color)
    return paper_drawn


def log_if_wide(ax, axis: str) -> None:
    """Tokens and times span orders of magnitude across tasks (GSM8K vs AIME): log scale when they do."""
    values = [v for line in ax.get_lines() for v in (line.get_xdata() if axis == "x" else line.get_ydata())]
    positive = [float(v) for v in values if float(v) > 0]
    if positive and max(positive) / min(positive) > 20:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


# ---------------------------------------------------------------- CLI



def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(description="Merge run directories into report.md, report.csv and report.png.")
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="output folders of run.py")
    p.add_argument("--out", required=True, type=Path, help="folder for report.md, report.csv and report.png")
    args = p.parse_args(argv)
    check_output_folder(args.out, "--out")
    runs = [load_run(d) for d in args.run_dirs]  # all checked before anything is written
    rows = build_rows(runs)
    records = [row_record(r) for r in rows]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.md").write_text(markdown(rows, records), encoding="utf-8")
    write_csv(args.out / "report.csv", records)
    write_png(args.out / "report.png", records)
    print(f"{len(records)} rows from {len(runs)} runs: {args.out / 'report.md'}, report.csv, report.png")
    return 0


def cli() -> int:
    return one_line_errors(main, "report.py", also=(OSError,))  # an --out that cannot be written is bad input too


if __name__ == "__main__":
    sys.exit(cli())
