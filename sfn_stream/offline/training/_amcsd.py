"""Structures of the American Mineralogical Crystal Structure Database (AMCSD).

We read the trimmed AMCSD that ships inside the ``larixite`` package (about 9,300 CIFs;
Downs & Hall-Wallace 2003, Am. Mineral. 88, 247). ``larixite.amcsd.get_amcsd()`` would try
to download the full database, so we open the shipped file with ``AMCSD()`` directly.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from functools import lru_cache
from io import StringIO
from typing import Any, NamedTuple


class AmcsdEntry(NamedTuple):
    amcsd_id: int
    mineral_name: str
    structure: Any  # pymatgen Structure, or None when rejected
    reject_reason: str | None


@lru_cache(maxsize=1)
def amcsd_database():
    """The shipped AMCSD (read-only: larixite would otherwise add columns to the file)."""
    from larixite.amcsd import AMCSD

    return AMCSD(read_only=True)


def amcsd_ids() -> list[int]:
    """All CIF ids of the shipped database, ascending."""
    db = amcsd_database()
    table = db.tables["cif"]
    return sorted(int(row.id) for row in db.execall(table.select()))


def _parse_cif(cif) -> tuple[Any, str | None]:
    from larixite.amcsd_utils import PMG_CIF_OPTS
    from pymatgen.io.cif import CifParser

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parser = CifParser(StringIO(cif.ciftext), **PMG_CIF_OPTS)
            structures = parser.parse_structures(primitive=False)
    except Exception as err:  # pymatgen raises many kinds on odd CIFs
        return None, f"cif_unreadable: {type(err).__name__}"
    if not structures:
        return None, "cif_no_structure"
    return structures[0], None


def iter_amcsd_structures(
    ids: Iterable[int] | None = None, *, ordered_only: bool = True, complete_only: bool = False
) -> Iterator[AmcsdEntry]:
    """Yield ``(amcsd_id, mineral_name, Structure | None, reject_reason)`` for each CIF.

    Rejection reasons (``structure`` is None): ``missing_cif``, ``cif_unreadable: <error>``,
    ``cif_no_structure``, ``no_sites``, ``missing_atoms: <elements>`` (when ``complete_only``: the
    CIF's formula, or a name that is a formula, has elements without sites; the corpus needs it for
    its chemistry labels, PXRD hardly sees the H that is usually missing), ``disordered`` (partial
    occupancy, when ``ordered_only``).
    """
    from sfn_stream.offline.corpus import missing_atoms_reason

    db = amcsd_database()
    for amcsd_id in amcsd_ids() if ids is None else ids:
        try:
            cif = db.get_cif(amcsd_id)
        except Exception as err:
            yield AmcsdEntry(amcsd_id, "", None, f"cif_unreadable: {type(err).__name__}")
            continue
        if cif is None:
            yield AmcsdEntry(amcsd_id, "", None, "missing_cif")
            continue
        try:
            name = str(cif.get_mineralname())
        except Exception:
            name = "missing"
        structure, reason = _parse_cif(cif)
        if structure is not None and len(structure) == 0:
            structure, reason = None, "no_sites"
        if structure is not None and ordered_only and not structure.is_ordered:
            structure, reason = None, "disordered"
        missing = complete_only and structure is not None and missing_atoms_reason(structure, cif.ciftext, name)
        if missing:
            structure, reason = None, missing
        yield AmcsdEntry(amcsd_id, name, structure, reason)
