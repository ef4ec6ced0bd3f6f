"""The structure sources the corpus is built from: AMCSD (larixite) and OmniXAS Cu (../shared).

Read here, with the training set's readers, and handed to :mod:`sfn_stream.offline.corpus`, which
knows no source.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

CORPUS_SOURCES = ("amcsd", "omnixas")


def corpus_sources(names: Iterable[str], warn: Callable[[str], None] | None = None):
    """A callable giving the :class:`~sfn_stream.offline.corpus.SourceEntry` stream of the sources
    ``names``, and their description for the corpus manifest. OmniXAS is left out (with a warning)
    when ../shared is absent."""
    names = list(names)
    unknown = set(names) - set(CORPUS_SOURCES)
    if unknown:
        raise ValueError(f"unknown {', '.join(sorted(unknown))} ({', '.join(CORPUS_SOURCES)})")
    described = {}
    if "amcsd" in names:
        import larixite

        described["amcsd"] = f"AMCSD shipped in larixite {larixite.__version__} (Downs & Hall-Wallace 2003)"
    if "omnixas" in names:
        from sfn_stream.offline.shared import have_shared

        if have_shared():
            described["omnixas"] = "OmniXAS Cu (Materials Project structures, FEFF 9.9.1), ../shared/data/omnixas_cu"
        else:
            if warn is not None:
                warn("../shared is absent: the OmniXAS part is left out")
            names = [n for n in names if n != "omnixas"]

    def entries() -> Iterator:
        from sfn_stream.offline.corpus import SourceEntry

        if "amcsd" in names:
            from ._amcsd import iter_amcsd_structures

            for entry in iter_amcsd_structures(complete_only=True):
                yield SourceEntry("amcsd", str(entry.amcsd_id), entry.mineral_name, entry.structure,
                                  entry.reject_reason)
        if "omnixas" in names:
            from sfn_stream.offline.shared import omnixas_structures

            for mp_id, structure in sorted(omnixas_structures().items()):
                yield SourceEntry("omnixas", mp_id, "", structure)

    return entries, described
