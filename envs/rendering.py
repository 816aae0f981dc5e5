"""Headless OpenGL for MiniWorld, and one display list per env.

MiniWorld compiles each env's static scene into OpenGL display list 1, which every pyglet
context of a process shares: after one env's reset, another env in the same process draws the
first one's walls. :func:`give_own_display_list` routes each env's compile and call of list 1 to
a list of its own.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

_RENDERER_HELP = (
    "MiniWorld renders with OpenGL; without a display it needs EGL. Install Mesa's EGL "
    "(Debian/Ubuntu: apt-get install libegl1 libgl1 libgl1-mesa-dri; conda: conda install -c conda-forge "
    "mesalib) or an NVIDIA driver with EGL, and keep PYGLET_HEADLESS=true (cpc-rl sets it). With a "
    "display, PYGLET_HEADLESS=false uses it instead."
)

_active_list_id = 1


class RendererUnavailableError(RuntimeError):
    """No OpenGL renderer could be set up for MiniWorld."""


def configure_headless() -> None:
    """Set the environment so that pyglet renders off-screen, in this process and its children.

    Must run before pyglet is imported: spawn and forkserver children read the environment
    variable again when they import pyglet, which is why it is set rather than only
    ``pyglet.options``.
    """
    os.environ.setdefault("PYGLET_HEADLESS", "true")
    # llvmpipe's render threads compete with env processes for cores, and fork-started workers
    # hang on them once the parent has imported miniworld; without them a step is also faster.
    os.environ.setdefault("LP_NUM_THREADS", "0")


def import_miniworld() -> Any:
    """Import miniworld headless, with one display list per env.

    :return: the ``miniworld`` module.
    :raises RendererUnavailableError: if no OpenGL renderer can be loaded, saying what to install.
    """
    if "miniworld" in sys.modules:  # by us, or by the user before envs (who then chose how it renders)
        import miniworld
        import miniworld.miniworld as miniworld_core

        _route_display_list_one(miniworld_core)
        return miniworld
    configure_headless()
    headless = os.environ["PYGLET_HEADLESS"].lower() in {"1", "true", "yes"}
    try:
        if sys.modules.get("pyglet") is not None:
            import pyglet

            # pyglet read the variable when it was imported: too late if it was imported first.
            if headless and not pyglet.options["headless"] and not os.environ.get("DISPLAY"):
                pyglet.options["headless"] = True
        with contextlib.redirect_stdout(io.StringIO()):
            import miniworld
            import miniworld.miniworld as miniworld_core
    except Exception as error:  # pyglet raises ImportError, OSError or its own errors
        sys.modules.pop("miniworld", None)
        raise RendererUnavailableError(
            f"could not start an OpenGL renderer for MiniWorld ({error}). {_RENDERER_HELP}"
        ) from error
    _route_display_list_one(miniworld_core)
    return miniworld


def _route_display_list_one(miniworld_core: Any) -> None:
    if getattr(miniworld_core, "_display_lists_routed", False):
        return
    from pyglet import gl

    def routed(list_id: int) -> int:
        return _active_list_id if list_id == 1 else list_id

    miniworld_core.glNewList = lambda list_id, mode: gl.glNewList(routed(list_id), mode)
    miniworld_core.glDeleteLists = lambda list_id, count: gl.glDeleteLists(routed(list_id), count)
    miniworld_core.glCallList = lambda list_id: gl.glCallList(routed(list_id))
    miniworld_core._display_lists_routed = True


@contextlib.contextmanager
def _drawing_with(list_id: int) -> Iterator[None]:
    global _active_list_id
    previous, _active_list_id = _active_list_id, list_id
    try:
        yield
    finally:
        _active_list_id = previous


def give_own_display_list(env: Any) -> Callable[[], None]:
    """Make a MiniWorld env compile and draw its static scene in a display list of its own.

    :param env: the unwrapped ``MiniWorldEnv``.
    :return: a function that frees the list (call it when closing the env).
    """
    from pyglet import gl

    env.shadow_window.switch_to()
    list_id = int(gl.glGenLists(1))
    if list_id == 0:
        raise RendererUnavailableError("OpenGL could not allocate a display list for a MiniWorld env")
    compile_static, draw_world = env._render_static, env._render_world

    def render_static() -> None:
        with _drawing_with(list_id):
            compile_static()

    def render_world(*args: Any, **kwargs: Any) -> Any:
        with _drawing_with(list_id):
            return draw_world(*args, **kwargs)

    env._render_static, env._render_world = render_static, render_world
    # The constructor's reset compiled into the shared list 1; compile this env's own now.
    env._render_static()

    def free() -> None:
        env.shadow_window.switch_to()
        gl.glDeleteLists(list_id, 1)

    return free
