"""Structures of the American Mineralogical Crystal Structure Database (AMCSD): the one reader.

We read the trimmed AMCSD that ships inside the ``larixite`` package (about 9,300 CIFs;
Downs & Hall-Wallace 2003, Am. Mineral. 88, 247). ``larixite.amcsd.get_amcsd()`` would try to
download the full database, so we open the shipped file with ``AMCSD()`` directly, read-only
(larixite would otherwise add columns to the file). Structure templates and the training and
corpus layers all read it through here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

from ._cif import parse_cif_text


class AmcsdEntry(NamedTuple):
    amcsd_id: int
    mineral_name: str
    structure: Any  # pymatgen Structure, or None when rejected
    reject_reason: str | None


# (structure, CIF text, mineral name) -> a reject reason, or None to keep the structure.
ExtraCheck = Callable[[Any, str, str], str | None]


def amcsd_database():
    """The shipped AMCSD, opened read-only (cheap; each reader opens its own, so threads never share one)."""
    from larixite.amcsd import AMCSD

    return AMCSD(read_only=True)


def amcsd_ids(database=None) -> list[int]:
    """All CIF ids of the shipped database, ascending."""
    db = database or amcsd_database()
    return sorted(int(row.id) for row in db.execall(db.tables["cif"].select()))


def iter_amcsd_structures(
    ids: Iterable[int] | None = None, *, ordered_only: bool = True, extra_check: ExtraCheck | None = None
) -> Iterator[AmcsdEntry]:
    """Yield ``(amcsd_id, mineral_name, Structure | None, reject_reason)`` for each CIF (all by default).

    Rejection reasons (``structure`` is None): ``missing_cif``, ``cif_unreadable: <error>``,
    ``cif_no_structure``, ``no_sites``, ``disordered`` (partial occupancy, when ``ordered_only``),
    and whatever ``extra_check(structure, cif_text, mineral_name)`` returns for a structure that
    passed the others.
    """
    from larixite.amcsd_utils import PMG_CIF_OPTS

    db = amcsd_database()
    for amcsd_id in amcsd_ids(db) if ids is None else ids:
        try:
            cif = db.get_cif(amcsd_id)
        except Exception as err:  # larixite raises on odd rows
            yield AmcsdEntry(amcsd_id, "", None, f"cif_unreadable: {type(err).__name__}")
            continue
        if cif is None:
            yield AmcsdEntry(amcsd_id, "", None, "missing_cif")
            continue
        try:
            name = str(cif.get_mineralname())
        except Exception:  # a row without a mineral record
            name = "missing"
        structure, reason = parse_cif_text(cif.ciftext, PMG_CIF_OPTS)
        if structure is not None and len(structure) == 0:
            structure, reason = None, "no_sites"
        if structure is not None and ordered_only and not structure.is_ordered:
            structure, reason = None, "disordered"
        if structure is not None and extra_check is not None:
            rejected = extra_check(structure, cif.ciftext, name)
            if rejected:
                structure, reason = None, rejected
        yield AmcsdEntry(amcsd_id, name, structure, reason)
