"""Evaluating a trained run: returns and success rate with confidence intervals, and videos."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cpc_rl.experiments.files import write_bytes_atomically
from cpc_rl.experiments.runs import (
    RunError,
    latest_model_path,
    load_model,
    read_config,
    run_episodes,
    summarise_episodes,
)

VIDEO_SCALE = 4


def write_video(frames: list[np.ndarray], path: Path, fps: int = 15) -> None:
    """Write first-person frames as a GIF (Pillow) or MP4 (needs imageio-ffmpeg), upscaled for viewing."""
    if not frames:
        raise RunError("no frames to write")
    scaled = [np.repeat(np.repeat(frame, VIDEO_SCALE, axis=0), VIDEO_SCALE, axis=1) for frame in frames]
    suffix = path.suffix.lower()
    if suffix == ".gif":
        import io

        from PIL import Image

        images = [Image.fromarray(frame) for frame in scaled]
        buffer = io.BytesIO()
        images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
        write_bytes_atomically(path, buffer.getvalue())
    elif suffix == ".mp4":
        try:
            import imageio.v2 as imageio
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise RunError("writing MP4 needs imageio-ffmpeg: pip install imageio[ffmpeg], or write a .gif") from None
        temporary = path.with_name(f".{path.name}.tmp.mp4")
        imageio.mimwrite(temporary, scaled, fps=fps, macro_block_size=1)
        temporary.replace(path)
    else:
        raise RunError(f"--video must end in .gif or .mp4; got {path.name}")


def check_video_path(path: Path) -> None:
    """Refuse a video path that cannot be written, before any episode is rolled out."""
    suffix = path.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise RunError(f"--video must end in .gif or .mp4; got {path.name}")
    if suffix == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise RunError("writing MP4 needs imageio-ffmpeg: pip install imageio[ffmpeg], or write a .gif") from None
    if not path.parent.is_dir() and path.parent != Path(""):
        raise RunError(f"--video: the folder {path.parent} does not exist")


def evaluate_run(run_dir: Path, episodes: int, video: Path | None = None, seed: int = 20_000) -> dict[str, Any]:
    """
    Evaluate the newest model of a run on fresh episodes.

    :return: the summary (mean return and CI, success rate and Wilson CI) and the model used.
    """
    if episodes < 1:
        raise RunError(f"--episodes must be >= 1; got {episodes}")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run directory {run_dir} does not exist")
    if video is not None:
        check_video_path(Path(video))
    config = read_config(run_dir)
    model_path = latest_model_path(run_dir)
    model = load_model(config, model_path)
    returns, lengths, frames = run_episodes(model, config, episodes, seed=seed, record=video is not None)
    summary = {
        **summarise_episodes(returns),
        "mean_length": float(lengths.mean()),
        "model": str(model_path),
        "num_timesteps": model.num_timesteps,
    }
    if video is not None:
        write_video(frames, Path(video))
        summary["video"] = str(video)
    return summary
