#!/bin/sh
# Prints the pip arguments for torch + torchvision, so that torch is installed in the
# same pip command as everything else (otherwise a dependency may pull another torch).
#  - NVIDIA GPU present: the default PyPI wheels (CUDA builds).
#  - No GPU, but the pinned wheels are on a local (file://) pip index: those, so
#    nothing is downloaded (the case on our CI machines).
#  - No GPU otherwise: the CPU-only builds from PyTorch's CPU index, never a CUDA build.
# Override with TORCH_SPEC="...".
PIP=${PIP:-pip}
TORCH=${TORCH_VERSION:-2.14.1}
TV=${TORCHVISION_VERSION:-0.29.1}
if [ -n "$TORCH_SPEC" ]; then echo "$TORCH_SPEC"; exit 0; fi
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "torch==$TORCH torchvision==$TV"
elif PIP_INDEX_URL=file:///nonexistent $PIP install --dry-run --no-deps --ignore-installed -q \
       "torch==$TORCH" >/dev/null 2>&1; then
  echo "torch==$TORCH torchvision==$TV"
else
  echo "--extra-index-url https://download.pytorch.org/whl/cpu torch==$TORCH+cpu torchvision==$TV+cpu"
fi
