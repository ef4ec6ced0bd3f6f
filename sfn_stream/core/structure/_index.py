"""Index of template structures: built once per source, cached on disk, queried in milliseconds.

Each usable template is stored in its conventional standard setting (spglib via pymatgen,
symprec 0.1, as the project's crystal-system labels) with what retrieval and substitution need:
anonymous formula (sorted element counts of the reduced formula), crystal system, space group,
element count, and per element the mean oxidation state (``sfn_stream.core.chemistry.oxidation_states``:
bond valence, else ICSD-weighted guesses) and the coordination numbers of its sites (CrystalNN,
cations only).
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ._request import MAX_ELEMENTS, MIN_ELEMENTS
from ._sources import SourceUnavailable, TemplateSource, make_source

log = logging.getLogger(__name__)

INDEX_FORMAT = 1
SYMPREC = 0.1
MAX_SITES = 240  # conventional cell; larger cells are rare and slow to simulate


def anonymous_key(counts: Iterable[int]) -> str:
    """'1-1-3' for ABX3: the sorted counts of the reduced formula."""
    return "-".join(str(c) for c in sorted(int(c) for c in counts))


def cache_dir(path: str | Path | None = None) -> Path:
    """``path``, else $SFN_STREAM_CACHE/structure, else ~/.cache/sfn-stream/structure."""
    if path is not None:
        return Path(path).expanduser()
    root = os.environ.get("SFN_STREAM_CACHE")
    base = Path(root).expanduser() if root else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sfn-stream"
    return base / "structure"


@dataclass
class TemplateEntry:
    template_id: str
    source: str
    label: str
    formula: str
    anonymous: str
    crystal_system: str
    spacegroup_number: int
    spacegroup_symbol: str
    n_sites: int
    elements: tuple[str, ...]  # ascending count in the reduced formula
    counts: tuple[int, ...]
    oxidation: tuple[float | None, ...]  # mean state per element, None when unknown
    cn: tuple[tuple[tuple[int, int], ...] | None, ...]  # per element ((CN, multiplicity), ...); None: not computed

    def to_dict(self) -> dict[str, Any]:
        return {
            "template_id": self.template_id, "source": self.source, "label": self.label, "formula": self.formula,
            "anonymous": self.anonymous, "crystal_system": self.crystal_system,
            "spacegroup_number": self.spacegroup_number, "spacegroup_symbol": self.spacegroup_symbol,
            "n_sites": self.n_sites, "elements": list(self.elements), "counts": list(self.counts),
            "oxidation": list(self.oxidation), "cn": [None if c is None else [list(p) for p in c] for c in self.cn],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TemplateEntry:
        return cls(
            d["template_id"], d["source"], d["label"], d["formula"], d["anonymous"], d["crystal_system"],
            int(d["spacegroup_number"]), d["spacegroup_symbol"], int(d["n_sites"]), tuple(d["elements"]),
            tuple(int(c) for c in d["counts"]), tuple(d["oxidation"]),
            tuple(None if c is None else tuple((int(a), int(b)) for a, b in c) for c in d["cn"]),
        )


def describe_template(structure, template_id: str, source: str, label: str = "") -> tuple[TemplateEntry | None, Any, str | None]:
    """(entry, conventional structure, None) or (None, None, reject reason)."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    from sfn_stream.core.chemistry import coordination_numbers, oxidation_states

    if structure is None:
        return None, None, "no_structure"
    if not structure.is_ordered:
        return None, None, "disordered"
    structure = structure.copy()
    structure.remove_oxidation_states()
    composition = structure.composition
    n_el = len(composition.elements)
    if not MIN_ELEMENTS <= n_el <= MAX_ELEMENTS:
        return None, None, f"{n_el}_elements"
    try:
        sga = SpacegroupAnalyzer(structure, symprec=SYMPREC)
        conventional = sga.get_conventional_standard_structure()
        system, sg_number, sg_symbol = str(sga.get_crystal_system()), int(sga.get_space_group_number()), str(sga.get_space_group_symbol())
        symmetrized = sga.get_symmetrized_structure()
    except Exception as err:  # spglib failures on odd cells
        return None, None, f"symmetry_failed: {type(err).__name__}"
    if len(conventional) > MAX_SITES:
        return None, None, "too_large"
    reduced, _ = composition.get_reduced_composition_and_factor()
    order = sorted(reduced.elements, key=lambda el: (reduced[el], el.X, el.symbol))
    elements = tuple(el.symbol for el in order)
    counts = tuple(int(round(reduced[el])) for el in order)
    if any(abs(reduced[el] - round(reduced[el])) > 1e-6 for el in order):
        return None, None, "non_integer_formula"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ox = oxidation_states(structure)
    mean_ox: dict[str, float | None] = {el: None for el in elements}
    if ox.states is not None:
        per_el = defaultdict(list)
        for site, state in zip(structure, ox.states):
            per_el[site.specie.symbol].append(state)
        mean_ox = {el: float(np.mean(per_el[el])) for el in elements}
    cn: dict[str, list[tuple[int, int]] | None] = {el: None for el in elements}
    all_neutral = all((v or 0) == 0 for v in mean_ox.values())
    for group in symmetrized.equivalent_indices:
        el = structure[group[0]].specie.symbol
        state = mean_ox[el]
        if not all_neutral and state is not None and state <= 0:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                value = coordination_numbers(structure, [group[0]], ox if ox.states is not None else None)[0]
        except Exception:
            continue
        cn[el] = (cn[el] or []) + [(int(value), len(group))]
    entry = TemplateEntry(
        template_id, source, label, reduced.reduced_formula, anonymous_key(counts), system, sg_number, sg_symbol,
        len(conventional), elements, counts, tuple(mean_ox[el] for el in elements),
        tuple(None if cn[el] is None else tuple(sorted(cn[el])) for el in elements),
    )
    return entry, conventional, None


@dataclass
class TemplateIndex:
    entries: list[TemplateEntry]
    lattices: np.ndarray  # (n, 3, 3)
    offsets: np.ndarray  # (n + 1,)
    numbers: np.ndarray  # atomic numbers of all sites
    frac: np.ndarray  # (m, 3)
    info: dict[str, Any] = field(default_factory=dict)
    _by_key: dict[tuple[str, str], list[int]] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.entries)

    def structure(self, i: int):
        from pymatgen.core import Lattice, Structure

        a, b = self.offsets[i], self.offsets[i + 1]
        return Structure(Lattice(self.lattices[i]), [int(z) for z in self.numbers[a:b]], self.frac[a:b])

    def lookup(self, anonymous: str, crystal_system: str | None = None) -> list[int]:
        if self._by_key is None:
            by_key: dict[tuple[str, str], list[int]] = defaultdict(list)
            for i, entry in enumerate(self.entries):
                by_key[(entry.anonymous, entry.crystal_system)].append(i)
                by_key[(entry.anonymous, "*")].append(i)
            self._by_key = dict(by_key)
        return list(self._by_key.get((anonymous, crystal_system or "*"), []))

    def anonymous_keys(self, n_elements: int) -> list[str]:
        return sorted({e.anonymous for e in self.entries if len(e.counts) == n_elements})

    def stats(self) -> dict[str, Any]:
        per_source: dict[str, Counter] = defaultdict(Counter)
        for e in self.entries:
            per_source[e.source][len(e.counts)] += 1
        return {
            "templates": len(self.entries),
            "per_source": {s: {"total": sum(c.values()), **{f"{k}_elements": v for k, v in sorted(c.items())}}
                           for s, c in sorted(per_source.items())},
            "build": self.info.get("builds", []),
        }

    # ----------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(
            tmp, lattices=self.lattices, offsets=self.offsets, numbers=self.numbers.astype(np.int16),
            frac=self.frac, entries=np.array(json.dumps([e.to_dict() for e in self.entries])),
            info=np.array(json.dumps({**self.info, "format": INDEX_FORMAT})),
        )
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> TemplateIndex:
        with np.load(path, allow_pickle=False) as data:
            info = json.loads(str(data["info"]))
            if info.get("format") != INDEX_FORMAT:
                raise ValueError(f"{path}: index format {info.get('format')} is not {INDEX_FORMAT}; rebuild it")
            entries = [TemplateEntry.from_dict(d) for d in json.loads(str(data["entries"]))]
            return cls(entries, data["lattices"], data["offsets"], data["numbers"].astype(int), data["frac"], info)

    @classmethod
    def from_structures(cls, items: Sequence[tuple[TemplateEntry, Any]], info: dict | None = None) -> TemplateIndex:
        lattices = np.array([s.lattice.matrix for _, s in items]).reshape(-1, 3, 3)
        sizes = [len(s) for _, s in items]
        numbers = np.array([site.specie.Z for _, s in items for site in s], dtype=int)
        frac = np.array([site.frac_coords for _, s in items for site in s], dtype=float).reshape(-1, 3)
        return cls([e for e, _ in items], lattices, np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
                   numbers, frac, dict(info or {}))

    @classmethod
    def concat(cls, parts: Sequence[TemplateIndex]) -> TemplateIndex:
        if len(parts) == 1:
            return parts[0]
        entries = [e for p in parts for e in p.entries]
        offsets, base = [np.zeros(1, dtype=np.int64)], 0
        for p in parts:
            offsets.append(p.offsets[1:] + base)
            base += p.offsets[-1]
        return cls(
            entries,
            np.concatenate([p.lattices for p in parts]).reshape(-1, 3, 3),
            np.concatenate(offsets),
            np.concatenate([p.numbers for p in parts]),
            np.concatenate([p.frac for p in parts]).reshape(-1, 3),
            {"builds": [b for p in parts for b in p.info.get("builds", [])]},
        )


def build_index(source: TemplateSource, *, progress: bool = False) -> TemplateIndex:
    """Describe every template of ``source`` (slow: minutes for AMCSD; cache the result)."""
    ok, reason = source.available()
    if not ok:
        raise SourceUnavailable(reason)
    started = time.perf_counter()
    items, rejected = [], Counter()
    iterator = source.iter_templates()
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, total=source.count(), desc=f"indexing {source.name}", unit="structure")
    for raw in iterator:
        if raw.structure is None:
            rejected[raw.reject_reason or "no_structure"] += 1
            continue
        try:
            entry, conventional, why = describe_template(raw.structure, raw.template_id, source.name, raw.label)
        except Exception as err:  # one bad template must not stop an index build
            entry, conventional, why = None, None, f"failed: {type(err).__name__}"
        if entry is None:
            rejected[why.split(":")[0]] += 1
            continue
        items.append((entry, conventional))
    build = {"source": source.name, "fingerprint": source.fingerprint(), "templates": len(items),
             "rejected": dict(rejected), "seconds": round(time.perf_counter() - started, 1)}
    return TemplateIndex.from_structures(items, {"builds": [build]})


_MEMO: dict[tuple[str, str], TemplateIndex] = {}


def source_index(source: Any, *, directory: str | Path | None = None, progress: bool = False, rebuild: bool = False) -> TemplateIndex:
    """The cached index of one source (built and saved on first use)."""
    source = make_source(source)
    fingerprint = source.fingerprint()
    key = (source.name, fingerprint)
    if key in _MEMO and not rebuild:
        return _MEMO[key]
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in source.name)[-60:]
    path = cache_dir(directory) / f"{safe}-{fingerprint}.npz"
    index = None
    if path.is_file() and not rebuild:
        try:
            index = TemplateIndex.load(path)
        except Exception as err:  # stale or damaged cache: rebuild it
            log.warning("rebuilding template index %s: %s", path, err)
    if index is None:
        ok, reason = source.available()
        if not ok:
            raise SourceUnavailable(reason)
        index = build_index(source, progress=progress)
        index.save(path)
    index.info["path"] = str(path)
    _MEMO[key] = index
    return index


def template_index(sources: Sequence[Any], *, directory: str | Path | None = None, progress: bool = False) -> tuple[TemplateIndex, dict[str, str]]:
    """Combined index of the usable sources, and for each unusable one the reason."""
    parts, skipped = [], {}
    for spec in sources:
        source = make_source(spec)  # an unknown name is a malformed request: StructureInputError
        if getattr(source, "name", "") == "materials_project":
            ok, reason = source.available()
            if not ok:
                skipped[source.name] = reason
            continue  # queried per request, not indexed
        try:
            parts.append(source_index(source, directory=directory, progress=progress))
        except SourceUnavailable as err:
            skipped[source.name] = str(err)
    if not parts:
        return TemplateIndex([], np.zeros((0, 3, 3)), np.zeros(1, dtype=np.int64), np.zeros(0, dtype=int), np.zeros((0, 3))), skipped
    return TemplateIndex.concat(parts), skipped

