"""MiniWorld environments for cpc-rl: headless, vectorised, correct, with ground truth for probes.

Importing this package sets ``PYGLET_HEADLESS=true`` and ``LP_NUM_THREADS=0`` (unless already set)
before miniworld is imported, so that envs render off-screen here and in worker processes.
"""

if __name__ != "cpc_rl.envs":  # this folder imported by its own name, from a checkout's root
    raise ImportError("cpc-rl's envs/ folder installs as cpc_rl.envs: import it as `from cpc_rl import envs`")


from cpc_rl.envs.factory import (
    GOAL_TASKS,
    SUITE,
    MiniWorldAgentEnv,
    check_env_id,
    list_envs,
    make_env,
    make_vec_env,
)
from cpc_rl.envs.rendering import RendererUnavailableError
from cpc_rl.envs.tasks import CUE_TASKS, SIGN_COLORS, TASK_KINDS, register_tasks

register_tasks()

__all__ = [
    "GOAL_TASKS",
    "SUITE",
    "MiniWorldAgentEnv",
    "RendererUnavailableError",
    "SIGN_COLORS",
    "TASK_KINDS",
    "CUE_TASKS",
    "check_env_id",
    "list_envs",
    "make_env",
    "make_vec_env",
]
