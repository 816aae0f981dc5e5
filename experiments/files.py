"""Writing results so that a crash or Ctrl-C never leaves a file half-written."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml


def _default_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _default_file_mode()


def write_bytes_atomically(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, _FILE_MODE)  # mkstemp creates 0600; results are for others to read too
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomically(path, text.encode())


def write_yaml(path: str | os.PathLike, data: Any) -> None:
    write_text_atomically(path, yaml.safe_dump(data, sort_keys=False))


def write_json(path: str | os.PathLike, data: Any) -> None:
    write_text_atomically(path, json.dumps(data, indent=2) + "\n")


def save_model_atomically(model: Any, path: str | os.PathLike) -> None:
    """``model.save`` into memory, then an atomic write: a checkpoint is whole or absent."""
    buffer = io.BytesIO()
    model.save(buffer)
    write_bytes_atomically(path, buffer.getvalue())


def save_figure_atomically(figure: Any, path: str | os.PathLike) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    write_bytes_atomically(path, buffer.getvalue())
