#!/bin/bash
# Start or resume a running study from a worktree frozen at the commit its PLAN.md names.
#
#   bash results/run_study.sh vizdoom    # results/vizdoom/comparison (PLAN.md: 8b0662a)
#   bash results/run_study.sh ppo        # results/ppo/confirmation (PLAN.md: 9feb338)
#   WORKERS=2 bash results/run_study.sh ppo   # two runs at a time, when it has the machine alone
#
# Run it from the main checkout, after `pip install torch==2.13.0 && pip install -e ".[experiments,vizdoom]"`.
# It makes the worktree ../study-<name> and its virtual environment if they are missing, copies
# the runs this checkout has committed into it (so that `compare` skips them), and runs the plan's
# commands in the foreground; start it with `nohup setsid ... &` to leave it running. WORKERS
# (default 1) runs that many at a time; each run is its own process with one thread and its own
# seed, so the count changes how soon runs finish, never what they compute.
# Collect what finishes with results/collect.py. Stop it with SIGTERM to the `compare`
# process: the run under way saves a checkpoint and resumes from it next time.
set -euo pipefail

study=${1:?usage: bash results/run_study.sh vizdoom|ppo}
main=$(git rev-parse --show-toplevel)
case $study in
  vizdoom) commit=8b0662a; folders=(results/vizdoom/comparison/recurrent_ppo results/vizdoom/comparison/ppo) ;;
  ppo) commit=9feb338; folders=(results/ppo/confirmation) ;;
  *) echo "run_study.sh: unknown study '$study'; choose vizdoom or ppo" >&2; exit 2 ;;
esac
worktree=${2:-$main/../study-$study}
workers=${WORKERS:-1}

if [ ! -d "$worktree" ]; then
  git -C "$main" worktree add --detach "$worktree" "$commit"
fi
if [ "$(git -C "$worktree" rev-parse --short=7 HEAD)" != "$commit" ]; then
  echo "run_study.sh: $worktree is not at $commit, the commit the plan names; give another folder" >&2
  exit 2
fi
if [ ! -x "$worktree/.venv/bin/python" ]; then
  python -m venv --system-site-packages "$worktree/.venv"
  "$worktree/.venv/bin/pip" install -q --no-deps -e "$worktree"
fi
for folder in "${folders[@]}"; do
  for status in "$main/$folder"/runs/*/*/seed_*/status.json; do
    [ -e "$status" ] || continue
    run=${status%/status.json}
    target=$worktree/${run#"$main"/}
    [ -e "$target/status.json" ] || { mkdir -p "$(dirname "$target")"; cp -r "$run" "$target"; }
  done
done

cd "$worktree"
python=.venv/bin/python
export OMP_NUM_THREADS=1
case $study in
  vizdoom)
    for seed in $(seq 20 29); do
      for algo in recurrent_ppo ppo; do
        $python run_agent.py compare --algo $algo \
          --env VizdoomDefendCenter-v1:200000 --env VizdoomDefendLine-v1:150000 --arm none --arm cpc \
          --seeds 1 --first-seed "$seed" --workers "$workers" --probe 20 --no-progress --set threads=1 \
          --out results/vizdoom/comparison/$algo --title "ViZDoom comparison, $algo (fresh seeds 20-29)"
      done
    done ;;
  ppo)
    $python run_agent.py compare --algo ppo \
      --env MiniWorld-SignMemory-v0:75000 --env MiniWorld-CueCorridor-v0:40000 \
      --env MiniWorld-CueMatch-v0:100000 --env MiniWorld-Hallway-v0:30000 \
      --env MiniWorld-OneRoomS6Fast-v0:10000 --arm none --arm control --arm cpc \
      --seeds 10 --first-seed 30 --workers "$workers" --probe 20 --no-progress --set threads=1 \
      --out results/ppo/confirmation --title "PPO confirmation (fresh seeds 30-39)" ;;
esac
