"""Template structure sources behind one interface.

Each source yields ``RawTemplate(id, label, structure | None, reject_reason)`` and has a
fingerprint that changes when its content does (the index cache is keyed on it):

- ``amcsd``: the AMCSD subset shipped in ``larixite`` (Downs & Hall-Wallace 2003, Am. Mineral. 88,
  247), read by ``sfn_stream.core.structure.amcsd`` (disordered structures kept: the index decides).
- ``aflow``: the AFLOW prototypes bundled with pymatgen (``analysis/prototypes``; Mehl et al. 2017,
  Comput. Mater. Sci. 136, S1).
- ``robocrys``: the mineral prototypes shipped with ``robocrys`` (``condense/mineral_db.json.gz``;
  Ganose & Jain 2019, MRS Commun. 9, 874); read from the installed package's data file without
  importing robocrys (whose import pulls in matminer).
- ``cif:<folder>``: a user's folder of CIF files (recursively).
- ``materials_project``: Materials Project through ``mp-api``, only with an API key and network
  access; queried per anonymous formula at inference time, not indexed wholesale.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from ._cif import parse_cif_text
from .amcsd import amcsd_ids, iter_amcsd_structures


class SourceUnavailable(RuntimeError):
    """A template source that cannot be used here (missing package, key or network): says which and why."""


class RawTemplate(NamedTuple):
    template_id: str
    label: str
    structure: Any  # pymatgen Structure or None
    reject_reason: str | None


class TemplateSource(Protocol):
    name: str

    def available(self) -> tuple[bool, str | None]: ...

    def fingerprint(self) -> str: ...

    def count(self) -> int | None: ...

    def iter_templates(self) -> Iterator[RawTemplate]: ...


def _digest(*parts: Any) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:16]


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "absent"


class AmcsdSource:
    name = "amcsd"

    def available(self) -> tuple[bool, str | None]:
        if importlib.util.find_spec("larixite") is None:
            return False, "the AMCSD source needs the 'larixite' package (pip install larixite)"
        return True, None

    def fingerprint(self) -> str:
        spec = importlib.util.find_spec("larixite")
        files = sorted(Path(spec.origin).parent.rglob("*.db")) if spec and spec.origin else []
        return _digest(_version("larixite"), *[(f.name, f.stat().st_size) for f in files])

    def count(self) -> int | None:
        return len(amcsd_ids())

    def iter_templates(self) -> Iterator[RawTemplate]:
        for entry in iter_amcsd_structures(ordered_only=False):
            yield RawTemplate(f"amcsd:{entry.amcsd_id}", entry.mineral_name, entry.structure, entry.reject_reason)


def _pymatgen_prototypes_file() -> Path:
    spec = importlib.util.find_spec("pymatgen.analysis.prototypes")
    folder = Path(spec.submodule_search_locations[0]) if spec and spec.submodule_search_locations else None
    if folder is None:  # older pymatgen: a module with the json next to it
        import pymatgen.analysis as analysis

        folder = Path(analysis.__file__).parent
    return folder / "aflow_prototypes.json.gz"


class AflowSource:
    name = "aflow"

    def available(self) -> tuple[bool, str | None]:
        if not _pymatgen_prototypes_file().is_file():
            return False, f"pymatgen's AFLOW prototypes file is missing ({_pymatgen_prototypes_file()})"
        return True, None

    def fingerprint(self) -> str:
        path = _pymatgen_prototypes_file()
        return _digest(_version("pymatgen"), path.stat().st_size if path.is_file() else 0)

    def _entries(self) -> list[dict]:
        with gzip.open(_pymatgen_prototypes_file(), "rt") as fh:
            return json.load(fh)

    def count(self) -> int | None:
        return len(self._entries())

    def iter_templates(self) -> Iterator[RawTemplate]:
        from pymatgen.core import Structure

        for i, entry in enumerate(self._entries()):
            tags = entry.get("tags", {})
            label = tags.get("mineral") or tags.get("strukturbericht") or tags.get("aflow", "")
            tid = f"aflow:{tags.get('aflow', i)}#{i}"
            try:
                snl = entry["snl"]
                structure = Structure.from_dict({k: snl[k] for k in ("lattice", "sites", "charge") if k in snl})
            except Exception as err:
                yield RawTemplate(tid, label, None, f"unreadable: {type(err).__name__}")
                continue
            yield RawTemplate(tid, label, structure, None)


def _robocrys_file() -> Path | None:
    spec = importlib.util.find_spec("robocrys")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0]) / "condense" / "mineral_db.json.gz"


class RobocrysSource:
    name = "robocrys"

    def available(self) -> tuple[bool, str | None]:
        path = _robocrys_file()
        if path is None:
            return False, "the robocrys mineral prototypes need the 'robocrys' package (pip install robocrys)"
        if not path.is_file():
            return False, f"robocrys is installed but its mineral_db.json.gz is missing ({path})"
        return True, None

    def fingerprint(self) -> str:
        path = _robocrys_file()
        return _digest(_version("robocrys"), path.stat().st_size if path and path.is_file() else 0)

    def _table(self) -> dict:
        with gzip.open(_robocrys_file(), "rt") as fh:
            return json.load(fh)  # pandas "split" orient: columns, index, data

    def count(self) -> int | None:
        return len(self._table()["data"])

    def iter_templates(self) -> Iterator[RawTemplate]:
        from pymatgen.core import Structure

        table = self._table()
        columns = table["columns"]
        for i, (key, row) in enumerate(zip(table["index"], table["data"])):
            record = dict(zip(columns, row))
            tid = f"robocrys:{key}#{i}"
            label = record.get("mineral") or key
            try:
                structure = Structure.from_dict(record["structure"])
            except Exception as err:
                yield RawTemplate(tid, label, None, f"unreadable: {type(err).__name__}")
                continue
            yield RawTemplate(tid, label, structure, None)


class CifFolderSource:
    """Every ``*.cif`` under a folder (one structure per file: the first data block)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder).expanduser()
        self.name = f"cif:{self.folder.resolve()}"

    def _files(self) -> list[Path]:
        return sorted(p for p in self.folder.rglob("*") if p.suffix.lower() == ".cif" and p.is_file())

    def available(self) -> tuple[bool, str | None]:
        if not self.folder.is_dir():
            return False, f"CIF folder {self.folder} does not exist"
        if not self._files():
            return False, f"CIF folder {self.folder} holds no *.cif files"
        return True, None

    def fingerprint(self) -> str:
        return _digest(*[(str(p.relative_to(self.folder)), p.stat().st_size, int(p.stat().st_mtime)) for p in self._files()])

    def count(self) -> int | None:
        return len(self._files())

    def iter_templates(self) -> Iterator[RawTemplate]:
        for path in self._files():
            rel = str(path.relative_to(self.folder))
            structure, reason = parse_cif_text(path.read_text(errors="replace"))
            yield RawTemplate(f"cif:{rel}", path.stem, structure, reason)


class StructureSource:
    """In-memory structures under a name (tests, benchmarks, callers with their own database)."""

    def __init__(self, name: str, structures: dict[str, Any], labels: dict[str, str] | None = None):
        self.name = name
        self.structures = dict(structures)
        self.labels = dict(labels or {})

    def available(self) -> tuple[bool, str | None]:
        return (True, None) if self.structures else (False, f"source {self.name!r} holds no structures")

    def fingerprint(self) -> str:
        return _digest(*[(k, json.dumps(s.as_dict(), sort_keys=True, default=str)) for k, s in sorted(self.structures.items())])

    def count(self) -> int | None:
        return len(self.structures)

    def iter_templates(self) -> Iterator[RawTemplate]:
        for key, structure in self.structures.items():
            yield RawTemplate(f"{self.name}:{key}", self.labels.get(key, key), structure, None)


class MaterialsProjectSource:
    """Materials Project via ``mp-api`` (needs MP_API_KEY and network); queried, not indexed."""

    name = "materials_project"
    HOST = "api.materialsproject.org"

    def __init__(self, api_key: str | None = None, timeout: float = 3.0):
        self.api_key = api_key or os.environ.get("MP_API_KEY") or os.environ.get("PMG_MAPI_KEY")
        self.timeout = timeout

    def available(self) -> tuple[bool, str | None]:
        if importlib.util.find_spec("mp_api") is None:
            return False, "the Materials Project source needs the 'mp-api' package (pip install mp-api)"
        if not self.api_key:
            return False, "the Materials Project source needs an API key in MP_API_KEY (materialsproject.org/api)"
        import socket

        try:
            socket.create_connection((self.HOST, 443), timeout=self.timeout).close()
        except OSError as err:
            return False, f"the Materials Project is not reachable from here ({self.HOST}: {err})"
        return True, None

    def fingerprint(self) -> str:
        return _digest(_version("mp-api"))

    def count(self) -> int | None:
        return None

    def iter_templates(self) -> Iterator[RawTemplate]:
        raise SourceUnavailable("the Materials Project is queried per formula (query_templates), not iterated")

    def query_templates(self, anonymous_formulas: list[str], crystal_systems: list[str]) -> Iterator[RawTemplate]:
        """Structures of the given anonymous formulas (pymatgen 'ABC3' style) and crystal systems."""
        ok, reason = self.available()
        if not ok:
            raise SourceUnavailable(reason)
        from mp_api.client import MPRester

        with MPRester(self.api_key) as mpr:
            for system in crystal_systems:
                docs = mpr.materials.summary.search(
                    formula=anonymous_formulas, crystal_system=system.capitalize(),
                    fields=["material_id", "structure", "formula_pretty"],
                )
                for doc in docs:
                    yield RawTemplate(f"mp:{doc.material_id}", str(doc.formula_pretty), doc.structure, None)


DEFAULT_SOURCES = ("amcsd", "aflow", "robocrys")


def make_source(spec: Any) -> TemplateSource:
    """A source object from a name ('amcsd', 'aflow', 'robocrys', 'materials_project'), a folder, or itself."""
    if not isinstance(spec, (str, Path)):
        return spec
    text = str(spec)
    named = {"amcsd": AmcsdSource, "aflow": AflowSource, "robocrys": RobocrysSource,
             "materials_project": MaterialsProjectSource, "mp": MaterialsProjectSource}
    if text in named:
        return named[text]()
    folder = text[4:] if text.startswith("cif:") else text
    if Path(folder).expanduser().is_dir():
        return CifFolderSource(folder)
    from ._request import StructureInputError

    raise StructureInputError(
        f"unknown template source {text!r}: use amcsd, aflow, robocrys, materials_project or a folder of CIFs"
    )
