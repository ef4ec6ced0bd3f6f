"""What every spectrum reader shares: the file record, its errors and the input-size limit."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "MAX_INPUT_BYTES",
    "MAX_INPUT_BYTES_VARIABLE",
    "InputTooLargeError",
    "SpectrumFile",
    "SpectrumFileError",
    "check_input_size",
    "max_input_bytes",
    "read_lines",
]


class SpectrumFileError(ValueError):
    """A spectrum file cannot be read or lacks what the caller needs."""


class InputTooLargeError(SpectrumFileError):
    """A file is larger than any spectrum or powder pattern, so it is refused before it is read."""


# A long XANES scan or a fine powder pattern is well under 1 MiB of text; reading a file whole costs
# several times its size in memory, so anything far beyond that is refused unread.
MAX_INPUT_BYTES = 64 * 2**20
MAX_INPUT_BYTES_VARIABLE = "SFN_MAX_INPUT_BYTES"


def max_input_bytes() -> int:
    """The largest input file read: ``$SFN_MAX_INPUT_BYTES`` when set, else :data:`MAX_INPUT_BYTES`."""
    raw = os.environ.get(MAX_INPUT_BYTES_VARIABLE, "").strip()
    if not raw:
        return MAX_INPUT_BYTES
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if limit <= 0:
        raise SpectrumFileError(f"{MAX_INPUT_BYTES_VARIABLE} must be a positive number of bytes, not {raw!r}")
    return limit


def check_input_size(path: str | Path) -> None:
    """Refuse a file larger than :func:`max_input_bytes` from its size alone (nothing is read)."""
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise SpectrumFileError(f"{path}: cannot read file ({exc.strerror or exc})") from None
    limit = max_input_bytes()
    if size > limit:
        raise InputTooLargeError(
            f"{path}: the file is {_mib(size)} ({size} bytes), more than the {_mib(limit)} ({limit} bytes) "
            f"an input may have; set {MAX_INPUT_BYTES_VARIABLE} to read larger files"
        )


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


@dataclass
class SpectrumFile:
    """Columns (name -> array), header metadata and free comments of one file."""

    columns: dict[str, np.ndarray]
    metadata: dict[str, str] = field(default_factory=dict)
    format: str = "columns"
    path: str = ""
    comments: list[str] = field(default_factory=list)

    def meta(self, key: str, default: str | None = None) -> str | None:
        """Case-insensitive metadata lookup (XDI field names are case-insensitive)."""
        wanted = key.lower()
        for name, value in self.metadata.items():
            if name.lower() == wanted:
                return value
        return default

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "columns": list(self.columns),
            "n_points": len(next(iter(self.columns.values()))) if self.columns else 0,
            "metadata": dict(self.metadata),
        }


def read_lines(path: Path) -> list[str]:
    """The lines of a text file, refused unread when larger than the input limit."""
    check_input_size(path)
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise SpectrumFileError(f"{path}: cannot read file ({exc.strerror or exc})") from None
