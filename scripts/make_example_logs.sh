#!/usr/bin/env bash
# Regenerate every folder of example_logs/ with the current code, on CPU, from the repository root with the offline
# data in ../shared/data. Small settings (3 items, 96-128 new tokens), so the whole regeneration takes about
# 20 min on 2 CPU cores; the README's tables quote the larger runs of the commands it shows.
# Each run.py folder's summary.json records its exact command, seed and extraction rules; console.log keeps the
# stdout of the command (paths in it are relative to the repository, as the commands below give them).
# Usage: bash scripts/make_example_logs.sh [FOLDER ...]   (default: every folder; FOLDER as named in example_logs/)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
QWEN=Qwen/Qwen2.5-Coder-0.5B-Instruct
wanted=("$@")

want() {  # want FOLDER: true when FOLDER is to be regenerated; it is then emptied first
  if [[ ${#wanted[@]} -gt 0 && ! " ${wanted[*]} " == *" $1 "* ]]; then return 1; fi
  rm -rf "example_logs/$1"
  echo "== example_logs/$1" >&2
}

sequential() {  # sequential TASK: baseline, text_mas and latent_mas on 3 items of TASK
  local dir=example_logs/$1-sequential-qwen2.5-coder-0.5b
  mkdir -p "$dir"
  python run.py --method baseline text_mas latent_mas --task "$1" --max_samples 3 --data_dir ../shared/data \
      --model_name $QWEN --latent_steps 10 --temperature 0 --max_new_tokens 128 --generate_bs 3 \
      --output_dir "$dir" > "$dir/console.log"
}

if want gsm8k-sequential-qwen2.5-coder-0.5b; then sequential gsm8k; fi

if want gsm8k-hierarchical-qwen2.5-coder-0.5b; then
  mkdir -p example_logs/gsm8k-hierarchical-qwen2.5-coder-0.5b
  python run.py --method text_mas latent_mas --prompt hierarchical --hierarchy parallel --task gsm8k --max_samples 3 \
      --data_dir ../shared/data --model_name $QWEN --latent_steps 10 --temperature 0 --max_new_tokens 128 \
      --generate_bs 3 --output_dir example_logs/gsm8k-hierarchical-qwen2.5-coder-0.5b \
      > example_logs/gsm8k-hierarchical-qwen2.5-coder-0.5b/console.log
fi

if want mbppplus-sequential-qwen2.5-coder-0.5b; then sequential mbppplus; fi

if want report; then  # the paired comparisons over the run folders above
  python report.py example_logs/gsm8k-sequential-qwen2.5-coder-0.5b example_logs/gsm8k-hierarchical-qwen2.5-coder-0.5b \
      example_logs/mbppplus-sequential-qwen2.5-coder-0.5b --out example_logs/report
fi

if want benchmark-cpu-qwen2.5-coder-0.5b; then  # reuses the two GSM8K runs for its methods section
  mkdir -p example_logs/benchmark-cpu-qwen2.5-coder-0.5b
  python scripts/benchmark.py --model_name $QWEN --data_dir ../shared/data --max_samples 3 --max_new_tokens 128 \
      --latent_steps 10 --reps 5 --batch_sizes 1 3 --sections steps batching memory \
      --methods_from example_logs/gsm8k-sequential-qwen2.5-coder-0.5b example_logs/gsm8k-hierarchical-qwen2.5-coder-0.5b \
      --output_dir example_logs/benchmark-cpu-qwen2.5-coder-0.5b \
      > example_logs/benchmark-cpu-qwen2.5-coder-0.5b/console.log
fi

if want calibration-gsm8k-qwen2.5-coder-0.5b; then
  python scripts/calibrate.py --model_name $QWEN --task gsm8k --data_dir ../shared/data --dev_samples 2 \
      --latent_steps 0 5 --realign off on --max_new_tokens 96 --temperature 0 --generate_bs 2 \
      --output_dir example_logs/calibration-gsm8k-qwen2.5-coder-0.5b
fi

if want hetero-gsm8k; then
  mkdir -p example_logs/hetero-gsm8k
  python scripts/hetero_eval.py --data_dir ../shared/data --max_samples 3 --max_new_tokens 96 --latent_steps 3 \
      --output_dir example_logs/hetero-gsm8k > example_logs/hetero-gsm8k/console.log
fi
