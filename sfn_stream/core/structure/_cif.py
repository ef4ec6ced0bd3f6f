"""CIF text -> pymatgen Structure, with a reject reason instead of an exception."""

from __future__ import annotations

import warnings
from io import StringIO
from typing import Any


def parse_cif_text(text: str, options: dict | None = None) -> tuple[Any, str | None]:
    """``(first structure, None)`` or ``(None, reason)``: ``cif_unreadable: <error>`` or ``cif_no_structure``.

    ``options`` are CifParser keyword arguments (the AMCSD's need larixite's ``PMG_CIF_OPTS``).
    """
    from pymatgen.io.cif import CifParser

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structures = CifParser(StringIO(text), **(options or {})).parse_structures(primitive=False)
    except Exception as err:  # pymatgen raises many kinds on odd CIFs
        return None, f"cif_unreadable: {type(err).__name__}"
    if not structures:
        return None, "cif_no_structure"
    return structures[0], None
