"""Where sfn-stream finds its files: the repository's data folders, the model bundles, ../shared.

One place for every path, so that a non-editable install (``pip install .``) finds its bundles in
the installed package (``sfn_stream/models``, the repository's ``models/`` copied in at build time)
and a source checkout finds the repository's ``data/`` and ``docs/``.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
REPO_DIR = PACKAGE_DIR.parent  # meaningful in a source checkout only
DATA_DIR = REPO_DIR / "data"
DOCS_DIR = REPO_DIR / "docs"
CORPUS_DIR = DATA_DIR / "corpus"
SPLITS_DIR = DATA_DIR / "splits"
LABELS_DIR = DATA_DIR / "labels"
XRD_STICK_TABLE = DATA_DIR / "xrd_sticks" / "xrd_sticks.npz"  # the committed PXRD stick table
PACKAGE_DATA_DIR = PACKAGE_DIR / "data"


def models_dir() -> Path:
    """The folder holding the bundles: ``$SFN_STREAM_MODELS``, else the package's ``models``."""
    env = os.environ.get("SFN_STREAM_MODELS")
    return Path(env) if env else PACKAGE_DIR / "models"


def shared_candidate() -> Path:
    """``$SFN_SHARED`` or the ``shared`` folder beside the repository (it may not exist)."""
    env = os.environ.get("SFN_SHARED")
    return Path(env) if env else REPO_DIR.parent / "shared"
