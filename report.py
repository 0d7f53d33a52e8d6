"""Tables of results: the comparison printed at the end of a run (more report tooling lands here)."""

from __future__ import annotations

LABELS = {"baseline": "Single", "text_mas": "TextMAS", "latent_mas": "LatentMAS"}


def comparison_table(methods: dict[str, dict]) -> str:
    """Markdown table, one row per method: accuracy, output tokens per item, seconds, and each against text_mas."""
    ref = methods.get("text_mas")
    header = "| Method | Accuracy (%) | Output tokens / item | Seconds | Tokens vs TextMAS | Speed-up vs TextMAS |"
    rows = [header, "|---|---|---|---|---|---|"]
    for name, m in methods.items():
        fewer = speed = "-"
        if ref and name != "text_mas":
            if ref["avg_output_tokens"]:
                fewer = f"{100 * (1 - m['avg_output_tokens'] / ref['avg_output_tokens']):+.1f}% fewer".replace("+", "")
            if m["seconds"]:
                speed = f"{ref['seconds'] / m['seconds']:.2f}x"
        rows.append(f"| {LABELS.get(name, name)} | {100 * m['accuracy']:.1f} ({m['correct']}/{m['n']}) | "
                    f"{m['avg_output_tokens']:.1f} | {m['seconds']:.1f} | {fewer} | {speed} |")
    return "\n".join(rows)
