#!/usr/bin/env bash
# Every GPU check in one run (issue #37), for a session lent a GPU machine: under 8 minutes.
#   run: bash bench/gpu_session.sh      (writes every figure under $OUT, default ./gpu-out)
# Installs the project over the CUDA torch already there, runs the device tests, the GPU smoke
# test with the GPU's busy fraction sampled, the main job for a fixed number of steps on CUDA
# (recording which vec env and how many workers it chose) and CPC's overhead on CUDA.
set -uo pipefail
command -v nvidia-smi > /dev/null || { echo "no NVIDIA GPU here: run tests/test_device.py for the CPU-side checks" >&2; exit 2; }
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYGLET_HEADLESS=true
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  nproc
} > "$OUT/machine.txt" 2>&1
# A CUDA torch already on the machine stays; a CPU one would be replaced by the registry's default.
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || pip install --quiet torch
pip install --quiet -e ".[test,vizdoom]" > "$OUT/install.txt" 2>&1
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader -lms 200 > "$OUT/gpu_busy.csv" &
SAMPLER=$!
timeout 120 python -m pytest -q -n 0 tests/test_device.py tests/test_head.py > "$OUT/tests.txt" 2>&1
timeout 120 python bench/gpu_smoke.py --steps 4000 --n-envs 16 > "$OUT/gpu_smoke.txt" 2>&1
timeout 120 python bench/gpu_smoke.py --env VizdoomMyWayHome-v1 --steps 4000 --n-envs 16 > "$OUT/gpu_smoke_vizdoom.txt" 2>&1
timeout 150 python run_agent.py train --device cuda --steps 20000 --run-dir "$OUT/main_job" --no-progress \
  > "$OUT/main_job.txt" 2>&1
timeout 120 python bench/cpc_overhead.py --device cuda --algos ppo recurrent_ppo --steps 2000 --repeats 2 \
  --no-contrib > "$OUT/cpc_overhead.txt" 2>&1
kill "$SAMPLER"
rm -rf "$OUT/main_job/model.zip" "$OUT/main_job/checkpoints" "$OUT"/main_job/logs/*/events.*
grep -h "vec_env\|n_envs\|threads" "$OUT/main_job/settings.yaml" > "$OUT/main_job_choices.txt" 2>/dev/null
echo "figures in $OUT"
