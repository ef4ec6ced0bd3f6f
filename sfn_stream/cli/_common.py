"""Shared bits of the command line: exit codes, errors, console output."""

from __future__ import annotations

import json
import sys

EXIT_USAGE = 2  # unusable input: a clear message on stderr


class CliError(Exception):
    def __init__(self, message: str, status: int = EXIT_USAGE):
        super().__init__(message)
        self.status = status


def console():
    from rich.console import Console

    return Console()


def print_json(payload) -> None:
    json.dump(payload, sys.stdout, indent=2, default=_default)
    sys.stdout.write("\n")


def _default(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)
