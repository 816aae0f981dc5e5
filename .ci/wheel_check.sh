#!/usr/bin/env bash
# CI: build the sdist and the wheel, install the wheel into a fresh venv outside the checkout, and
# use it from a folder that holds a user's own envs/, agents/ and experiments/ packages.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python -m build --sdist --wheel --outdir "$work/dist" . > "$work/build.log" 2>&1 || { tail -20 "$work/build.log"; exit 1; }
python -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install --quiet torch==2.13.0
wheel=$(ls "$work"/dist/*.whl)
"$py" -m pip install --quiet "$wheel[experiments,zoo]"
# The wheel installs one top-level name.
python -c "import sys, zipfile; print(*sorted({n.split('/')[0] for n in zipfile.ZipFile(sys.argv[1]).namelist()} - {n.split('/')[0] for n in zipfile.ZipFile(sys.argv[1]).namelist() if '.dist-info/' in n}), sep='\n')" "$wheel" | tee "$work/top_level.txt"
[ "$(cat "$work/top_level.txt")" = "cpc_rl" ] || { echo "CI: the wheel installs more than cpc_rl" >&2; exit 1; }
user="$work/user project"
mkdir -p "$user/envs" "$user/agents" "$user/experiments"
for package in envs agents experiments; do echo "OWN = '$package'" > "$user/$package/__init__.py"; done
cd "$user"
export PYGLET_HEADLESS=true
"$py" - <<'PYTHON'
import envs  # the user's own, first on sys.path
from importlib.resources import files

import cpc_rl.agents
import cpc_rl.envs
from cpc_rl.sb3 import CPCPPO, CPCRecurrentPPO  # noqa: F401

assert envs.OWN == "envs", "cpc-rl shadowed the user's envs package"
assert "site-packages" in cpc_rl.envs.__file__, cpc_rl.envs.__file__
for name in ("cpc_a2c", "cpc_ppo", "cpc_ppo_lstm"):
    assert (files("cpc_rl.agents") / "zoo" / f"{name}.yml").is_file(), name
print("imports OK beside a user's own envs/agents/experiments")
PYTHON
"$work/venv/bin/cpc-rl" --help > /dev/null
# A comparison starts its runs in child processes: the installed command line must run them too.
"$work/venv/bin/cpc-rl" compare --algo ppo --env MiniWorld-Hallway-v0 --arm cpc --seeds 1 --steps 100 --out tiny \
  --no-progress --set n_steps=50 batch_size=50 cpc.sequence_length=50 eval_episodes=1 env.max_episode_steps=30 \
  vec_env=dummy > compare.log 2>&1 || { tail -20 compare.log; exit 1; }
grep -q '"state": "finished"' tiny/runs/MiniWorld-Hallway-v0/cpc/seed_0/status.json
# Its records name no path of this machine.
if grep -rlE "$work|$HOME" tiny/runs --include='*.txt' --include='*.yaml' --include='*.json'; then
  echo "CI: a run recorded a machine path" >&2
  exit 1
fi
conf=$("$py" -c "from importlib.resources import files; print(files('cpc_rl.agents') / 'zoo' / 'cpc_ppo.yml')")
"$py" -m cpc_rl.zoo train --algo cpc_ppo --env MiniWorld-Hallway-v0 --gym-packages cpc_rl.envs --conf-file "$conf" \
  -n 100 -f zoo-logs --hyperparams n_steps:50 batch_size:50 > zoo.log 2>&1 || { tail -20 zoo.log; exit 1; }
ls zoo-logs/cpc_ppo/MiniWorld-Hallway-v0_1 > /dev/null
echo "CI: the wheel works outside the checkout"
