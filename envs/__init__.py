"""MiniWorld environments for cpc-rl: headless, vectorised, correct, with ground truth for probes.

Importing this package sets ``PYGLET_HEADLESS=true`` and ``LP_NUM_THREADS=0`` (unless already set)
before miniworld is imported, so that envs render off-screen here and in worker processes.
"""

from envs.factory import (
    GOAL_TASKS,
    SUITE,
    MiniWorldAgentEnv,
    check_env_id,
    list_envs,
    make_env,
    make_vec_env,
)
from envs.rendering import RendererUnavailableError
from envs.tasks import CUE_TASKS, SIGN_COLORS, TASK_KINDS, register_tasks

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
