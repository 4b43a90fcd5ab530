#!/bin/sh
# The GPU benchmarks in one call (a short lease): DAG against the segmenter's forward+backward ceiling
# (FCN-ResNet50 and DeepLabV3-ResNet50 at 520 px, random weights), DAG on Faster R-CNN ResNet-50 FPN at
# 800 px against its own pass over the fixed proposals (backbone and box head shares), the Boundary Attack's priors
# against foolbox's BoundaryAttack and HopSkipJumpAttack on MobileNetV2 and the 20 foolbox photos, and
# the Boundary Attack's cost besides the model (wall per 1,000 evaluations, the model's share), and host
# memory of a streamed run over 256 and 2,048 JPEG files (DataLoader workers, pinned memory).
# Usage: sh bench/gpu.sh [OUT_DIR]; prints every table, and copies them to OUT_DIR when given.
set -u
out=${1:-/tmp/advlab-bench}
mkdir -p "$out"
run() { echo "== $*"; "$@" 2>&1 | grep -v '%|' | tee -a "$out/bench.txt"; }
run python3 bench/dag.py --device cuda --model fcn_resnet50 --size 520 -n 8 --iterations 20
run python3 bench/dag.py --device cuda --model fcn_resnet50 --size 520 -n 8 --iterations 20 --precision bf16
run python3 bench/dag.py --device cuda --model deeplabv3_resnet50 --size 520 -n 8 --iterations 20 --precision bf16
run python3 bench/dag_detection.py --device cuda --model fasterrcnn_resnet50_fpn --size 800 -n 4 --iterations 20
run python3 bench/boundary.py --device cuda --budgets 1000,5000 --candidates 12 --priors lowfreq,normal,perlin \
    --hopskipjump 4,16
run python3 bench/boundary_overhead.py --device cuda --photos 20
run python3 bench/memory.py --device cuda -n 256
