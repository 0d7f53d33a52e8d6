#!/usr/bin/env bash
# Small-sample reproduction run by CI: baseline, text_mas and latent_mas on GSM8K, ARC-Challenge and MBPP+ (3 items
# each) with the packaged SmolLM2-135M-Instruct, then the paper-style report. Proves the pipeline end to end;
# accuracy is reported, not asserted. Usage: bash scripts/ci_reproduction.sh [OUT_DIR] [DATA_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-ci_reproduction}
data=${2:-../shared/data}
rm -rf "$out"
for task in gsm8k arc_challenge mbppplus; do
  python run.py --method baseline text_mas latent_mas --task "$task" --max_samples 3 \
      --model_name HuggingFaceTB/SmolLM2-135M-Instruct --data_dir "$data" --temperature 0 --max_new_tokens 128 \
      --latent_steps 10 --generate_bs 3 --quiet --output_dir "$out/runs/$task"
done
python report.py "$out"/runs/* --out "$out/report"
cat "$out/report/report.md"
# The README's blocks marked `readme-check: ci` (the quick start, the sweep's dry run, the Python API example), run as
# written.
python scripts/check_readme_commands.py --run ci
