"""The AMCSD as training and the corpus read it: the core reader, plus the corpus's completeness check."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from sfn_stream.core.structure import AmcsdEntry, amcsd_ids
from sfn_stream.core.structure import iter_amcsd_structures as _read_amcsd

__all__ = ["AmcsdEntry", "amcsd_ids", "iter_amcsd_structures"]


def iter_amcsd_structures(
    ids: Iterable[int] | None = None, *, ordered_only: bool = True, complete_only: bool = False
) -> Iterator[AmcsdEntry]:
    """``sfn_stream.core.structure.iter_amcsd_structures``; with ``complete_only`` it also rejects
    ``missing_atoms: <elements>`` (the CIF's formula, or a name that is a formula, has elements without
    sites): the corpus needs them for its chemistry labels, PXRD hardly sees the H that is usually missing.
    """
    from sfn_stream.offline.corpus import missing_atoms_reason

    return _read_amcsd(ids, ordered_only=ordered_only, extra_check=missing_atoms_reason if complete_only else None)
