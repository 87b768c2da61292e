#!/usr/bin/env bash
# Installs everything odl needs on Debian 12, from package registries only. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"

qemu_ok() {
  command -v qemu-system-riscv32 >/dev/null 2>&1 || return 1
  local v; v=$(qemu-system-riscv32 --version | head -1 | sed -E 's/.*version ([0-9]+).*/\1/')
  [ "${v:-0}" -ge 8 ]
}
if ! qemu_ok; then
  if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "deb http://deb.debian.org/debian bookworm-backports main" | $SUDO tee /etc/apt/sources.list.d/odl-backports.list >/dev/null
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq -t bookworm-backports qemu-system-misc >/dev/null
fi
qemu-system-riscv32 --version | head -1

PY=${PYTHON:-python3}
if ! $PY -m pip --version >/dev/null 2>&1; then   # bare Debian: no pip yet
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-pip >/dev/null
fi
# Debian's own Python is "externally managed" (PEP 668): odl's packages go next to it, as for any tool installed
# system-wide with pip; a pyenv/venv Python is not affected.
if [ -f "$($PY -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')/EXTERNALLY-MANAGED" ]; then
  export PIP_BREAK_SYSTEM_PACKAGES=1
fi
# CPU build of torch, pinned (an unpinned torch pulls a multi-GB CUDA build).
$PY -c "import torch" 2>/dev/null || $PY -m pip install -q torch==2.13.0
$PY -m pip install -q -e ".[test,chart,ray]"
# timm and torchvision for the model zoo (odl/models/zoo.py): the registry's torchvision wheels are CUDA builds whose
# dependencies would replace the CPU torch, so both go in without dependencies, then timm's pure-Python ones.
# torchvision's compiled ops cannot load beside the CPU torch: odl.models.zoo.ensure_torchvision defines the two schemas
# its Python needs before importing it.
$PY -m pip show -q torchvision >/dev/null 2>&1 || $PY -m pip install -q --no-deps torchvision==0.29.1
$PY -m pip show -q timm >/dev/null 2>&1 || $PY -m pip install -q --no-deps timm==1.0.31
$PY -m pip install -q pyyaml safetensors huggingface_hub
$PY -c "from odl.models.zoo import ensure_torchvision; ensure_torchvision(); import timm, torchvision; print('timm', timm.__version__, 'torchvision', torchvision.__version__)"
$PY -c "import torch, numpy, jinja2, serial, ziglang, matplotlib, sklearn, tqdm, ray; print('torch', torch.__version__)"
# libFuzzer for the device protocol fuzzer (tests/fuzz/test_fuzz_protocol.py): zig's clang has no libFuzzer runtime,
# Debian's clang-19 has it in libclang-rt-19-dev.
if ! command -v clang-19 >/dev/null 2>&1 || ! ls /usr/lib/llvm-19/lib/clang/19/lib/linux/libclang_rt.fuzzer-*.a >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq clang-19 libclang-rt-19-dev >/dev/null
fi
$PY -c "import tqdm, hypothesis" && echo "tqdm, hypothesis ok"
