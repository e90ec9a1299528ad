#!/usr/bin/env bash
# Acceptance figure 1 of the foundation: the Burda et al. (2016) 1-layer VAE
# (784-200-200-z50, tanh), Trace_ELBO, static binarized MNIST, a 30-minute
# CPU budget, then IWAE-5000 on all 10000 test images.
# Usage: bash benchmarks/vae_binarized_mnist.sh [OUT_DIR]   (data from ../shared/data)
set -euo pipefail
out=${1:-runs/burda-vae}
export PYRO_DEEPGEN_DATA=${PYRO_DEEPGEN_DATA:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data}
pyro-deepgen train --dataset binarized_mnist --z-dim 50 --hidden 200,200 --activation tanh \
    --objective elbo --epochs 100000 --max-time 1800 --patience 50 --batch-size 128 --lr 1e-3 \
    --seed 0 --out "$out" --quiet
python "$(dirname "$0")/evaluate_speed.py" "$out" --num-samples 5000
