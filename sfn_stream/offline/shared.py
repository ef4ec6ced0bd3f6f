"""Access to the development data in ``../shared`` (never copied into the repository).

Everything here raises :class:`SharedDataMissing` when the folder is absent, so that
callers (benchmarks, training commands, tests) can skip cleanly on a user's fresh clone.
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

from sfn_stream.core import paths


class SharedDataMissing(FileNotFoundError):
    """The shared development data folder is not present on this machine."""


def shared_dir() -> Path:
    """``$SFN_SHARED`` or the ``shared`` folder beside the repository."""
    path = paths.shared_candidate()
    if not (path / "data").is_dir():
        raise SharedDataMissing(f"shared data folder not found at {path} (set SFN_SHARED)")
    return path


def shared_path(*parts: str) -> Path:
    path = shared_dir().joinpath(*parts)
    if not path.exists():
        raise SharedDataMissing(f"{path} is missing")
    return path


def have_shared() -> bool:
    try:
        shared_dir()
    except SharedDataMissing:
        return False
    return True


@lru_cache(maxsize=1)
def omnixas_poscars() -> dict[str, str]:
    """mp-id -> POSCAR text of the Materials Project structures behind the Cu FEFF spectra."""
    with gzip.open(shared_path("data", "omnixas_cu", "cu_structures_poscar.json.gz")) as fh:
        return json.load(fh)["structures"]


def omnixas_structures() -> dict:
    """mp-id -> pymatgen Structure (parsed on each call; cache the result if you need it twice)."""
    from pymatgen.core import Structure

    return {mp_id: Structure.from_str(text, fmt="poscar") for mp_id, text in omnixas_poscars().items()}


@lru_cache(maxsize=1)
def omnixas_site_spectra() -> dict[str, dict[str, list[float]]]:
    """'<mp-id>/<NNN>_Cu' -> {'energy': [...], 'mu': [...], 'mu0': [...]} (FEFF 9.9.1 xmu.dat).

    NNN is the 0-based index of the absorbing site in the material's POSCAR.
    """
    with gzip.open(shared_path("data", "omnixas_cu", "cu_feff_site_spectra.json.gz")) as fh:
        return json.load(fh)["spectra"]


@lru_cache(maxsize=1)
def matminer_mp_materials() -> dict[str, dict]:
    """mp-id -> {"formula", "poscar", "datasets", "labels"} of ../shared/data/matminer_mp: Materials Project
    structures with the DFT (PBE) properties matminer's datasets publish (null where absent)."""
    with gzip.open(shared_path("data", "matminer_mp", "mp_structures.json.gz")) as fh:
        return json.load(fh)["materials"]
