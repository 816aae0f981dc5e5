"""Headless OpenGL for MiniWorld, one display list per env, and fast texture loading.

MiniWorld compiles each env's static scene into OpenGL display list 1, which every pyglet
context of a process shares: after one env's reset, another env in the same process draws the
first one's walls. :func:`give_own_display_list` routes each env's compile and call of list 1 to
a list of its own.

MiniWorld asks pyglet for its textures as RGBA bytes; pyglet converts the RGB ones with a
regular expression over every pixel: 0.9 s of CPU for one 1024x1024 texture, several seconds per
process before the first step. :func:`_convert_with_numpy` gives the same bytes with numpy.
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
        _convert_images_with_numpy()
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
    _convert_images_with_numpy()
    return miniworld


def _convert_images_with_numpy() -> None:
    from pyglet.image import ImageData

    if hasattr(ImageData, "_pyglet_convert"):
        return
    ImageData._pyglet_convert = regex_convert = ImageData._convert

    def convert(self: Any, fmt: str, pitch: int) -> Any:
        return _convert_with_numpy(self, fmt, pitch, regex_convert)

    ImageData._convert = convert


def _convert_with_numpy(image: Any, fmt: str, pitch: int, regex_convert: Callable[..., Any]) -> Any:
    """
    pyglet's ``ImageData._convert`` for tightly packed rows, with numpy: the same bytes (a channel
    the source lacks takes its first channel, as pyglet does; rows flip where the pitches' signs
    differ). Other layouts go to pyglet's own conversion.
    """
    import numpy as np

    current_format, current_pitch = image._current_format, image._current_pitch
    packed = abs(current_pitch) == image.width * len(current_format) and abs(pitch) == image.width * len(fmt)
    if (fmt == current_format and pitch == current_pitch) or not packed or not current_pitch or not pitch:
        return regex_convert(image, fmt, pitch)
    image._ensure_string_data()
    pixels = np.frombuffer(image._current_data, dtype=np.uint8).reshape(image.height, image.width, -1)
    converted = pixels[:, :, [current_format.index(c) if c in current_format else 0 for c in fmt]]
    if current_pitch * pitch < 0:
        converted = converted[::-1]
    return np.ascontiguousarray(converted).tobytes()


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


def free_frame_buffers(env: Any) -> None:
    """
    Delete the GL objects of a MiniWorld env's frame buffers (the observation's and the view's).

    pyglet puts every context's objects in one shared space that outlives an env's window, and
    MiniWorld never deletes its frame buffers: each env made and closed in a process left ~0.5 MB
    behind (its 8x multisampled float observation buffer), which an evaluation env per evaluation
    turned into steady growth over a long run.

    :param env: the unwrapped ``MiniWorldEnv``, its window still open.
    """
    import ctypes

    from pyglet import gl

    env.shadow_window.switch_to()
    for frame_buffer in (getattr(env, "obs_fb", None), getattr(env, "vis_fb", None)):
        if frame_buffer is None:
            continue
        for fbo in (frame_buffer.multi_fbo, frame_buffer.final_fbo):
            gl.glBindFramebuffer(gl.GL_FRAMEBUFFER, fbo)
            names = {}
            for attachment in (gl.GL_COLOR_ATTACHMENT0, gl.GL_DEPTH_ATTACHMENT):
                kind, name = gl.GLint(0), gl.GLint(0)
                gl.glGetFramebufferAttachmentParameteriv(
                    gl.GL_FRAMEBUFFER, attachment, gl.GL_FRAMEBUFFER_ATTACHMENT_OBJECT_TYPE, ctypes.byref(kind)
                )
                gl.glGetFramebufferAttachmentParameteriv(
                    gl.GL_FRAMEBUFFER, attachment, gl.GL_FRAMEBUFFER_ATTACHMENT_OBJECT_NAME, ctypes.byref(name)
                )
                names[attachment] = (kind.value, name.value)
            gl.glBindFramebuffer(gl.GL_FRAMEBUFFER, 0)
            for kind, name in names.values():
                handle = gl.GLuint(name)
                if kind == gl.GL_TEXTURE:
                    gl.glDeleteTextures(1, ctypes.byref(handle))
                elif kind == gl.GL_RENDERBUFFER:
                    gl.glDeleteRenderbuffers(1, ctypes.byref(handle))
            gl.glDeleteFramebuffers(1, ctypes.byref(fbo))
