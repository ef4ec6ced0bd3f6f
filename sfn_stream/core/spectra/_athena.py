"""Athena project files (``.prj``): the groups a Demeter/Larch user keeps their spectra in.

Two generations exist, either gzipped or plain (Ravel & Newville, J. Synchrotron Rad. 12 (2005) 537;
Larch's ``read_athena`` reads both): the Demeter one, a Perl dump with one record per group
(``$old_group``, ``@args`` key/value list, ``@x`` energies, ``@y`` mu(E), optional ``@i0`` and
``@signal``, closed by ``[record]``), and Larch's JSON one (``_____header``/``_____order`` keys).
Each mu(E) group becomes a :class:`SpectrumFile` with columns ``energy`` and ``mu``; the energies
carry Athena's own calibration shift (``bkg_eshift``), as Athena plots them. Groups that are not
mu(E) (chi(k), difference spectra) are left out.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from fnmatch import fnmatch
from pathlib import Path

import numpy as np

from ._files import InputTooLargeError, SpectrumFile, SpectrumFileError, check_input_size, max_input_bytes

__all__ = ["is_athena_project", "read_athena"]

_SIGNATURE = "Athena project file -- "
_QUOTED_OR_BARE = re.compile(r"'((?:[^'\\]|\\.)*)'|\"((?:[^\"\\]|\\.)*)\"|([^,\s()=>]+)")
_NOT_MU = ("is_chi", "is_xmudat", "is_bkg", "is_diff", "is_proj", "is_pixel", "is_rsp")


def _text(path: Path) -> str | None:
    """The project's text, gunzipped when needed; None when the file is not an Athena project."""
    check_input_size(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        limit = max_input_bytes() * 8
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:  # a decompression bomb stops at the limit
            raw = inflater.decompress(raw, limit)
        except (zlib.error, EOFError, gzip.BadGzipFile) as exc:
            raise SpectrumFileError(f"{path}: a gzip file that cannot be read ({exc})") from None
        if inflater.unconsumed_tail:
            raise InputTooLargeError(f"{path}: unpacks to more than {limit} bytes, more than any project of spectra")
    head = raw[:500].decode("utf-8", errors="replace")
    if _SIGNATURE not in head:
        return None
    return raw.decode("utf-8", errors="replace")


def is_athena_project(path: str | Path) -> bool:
    """Whether ``path`` is an Athena project (gzipped or not), from its first bytes."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
        if head[:2] == b"\x1f\x8b":
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 500)
    except (OSError, zlib.error):
        return False
    return _SIGNATURE in head[:500].decode("utf-8", errors="replace")


def _values(text: str) -> list[str]:
    """The items of a Perl list ``@name = ('a','b',...);`` as strings."""
    body = text.split("=", 1)[1].strip().rstrip(";").strip()
    return [next(g for g in match if g != "") if any(match) else "" for match in _QUOTED_OR_BARE.findall(body)]


def _floats(path: Path, name: str, text: str) -> np.ndarray:
    try:
        return np.array([float(v) for v in _values(text)], dtype=float)
    except ValueError:
        raise SpectrumFileError(f"{path}: group {name!r} has a non-numeric value in {text.split('=')[0].strip()}") from None


def _perl_records(path: Path, text: str) -> list[dict]:
    records, current = [], {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key = stripped.split("=", 1)[0].strip()
        if key == "$old_group":
            current["name"] = (_values(stripped) or [""])[0]
        elif key == "@args":
            items = _values(stripped)
            current["args"] = dict(zip(items[0::2], items[1::2]))
        elif key in ("@x", "@y", "@i0", "@signal"):
            current[key[1:]] = _floats(path, current.get("name", "?"), stripped)
        elif stripped.startswith("[record]"):
            records.append(current)
            current = {}
    return records


def _json_records(path: Path, text: str) -> list[dict]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpectrumFileError(f"{path}: an Athena JSON project that cannot be parsed ({exc})") from None
    order = next((v for k, v in document.items() if k.startswith("_____order")), [])
    records = []
    for name in order:
        group = document.get(name, {})
        record = {"name": name, "args": {k: str(v) for k, v in (group.get("args") or {}).items()}}
        for key in ("x", "y", "i0", "signal"):
            if key in group:
                record[key] = np.asarray(group[key], dtype=float)
        records.append(record)
    return records


def _is_mu(args: dict) -> bool:
    def flag(key: str, default: str = "0") -> bool:
        try:
            return bool(int(float(args.get(key, default) or default)))
        except ValueError:
            return False

    return flag("is_xmu", "1") and not any(flag(k) for k in _NOT_MU)


def _spectrum(path: Path, record: dict) -> SpectrumFile:
    args = record.get("args", {})
    label = args.get("label") or record.get("name") or "?"
    if "x" not in record or "y" not in record or len(record["x"]) != len(record["y"]):
        raise SpectrumFileError(f"{path}: group {label!r} lacks its energies (@x) or mu(E) (@y)")
    try:
        shift = float(args.get("bkg_eshift") or 0.0)
    except ValueError:
        shift = 0.0
    metadata = {"athena.group": label, "athena.eshift": f"{shift:g}"}
    symbol = args.get("bkg_z") or args.get("atsym")
    if symbol and symbol[:1].isalpha():
        metadata["Element.symbol"] = symbol
    edge = args.get("bkg_edge") or args.get("edge")
    if edge:
        metadata["Element.edge"] = edge
    return SpectrumFile(columns={"energy": record["x"] + shift, "mu": record["y"]}, metadata=metadata,
                        format="athena", path=f"{path}#{label}")


def read_athena(path: str | Path, group: str | None = None) -> list[SpectrumFile]:
    """The mu(E) groups of an Athena project, in the project's order. ``group`` keeps those whose label
    matches it (case-insensitive, ``*`` and ``?`` as in a shell; Larch's ``match``). Raises
    :class:`SpectrumFileError` for a file that is not a project, or when nothing is left."""
    path = Path(path)
    if not path.is_file():
        raise SpectrumFileError(f"{path}: no such file")
    text = _text(path)
    if text is None:
        raise SpectrumFileError(f"{path}: not an Athena project file (no '{_SIGNATURE.strip()}' line)")
    records = _json_records(path, text) if "_____header" in text[:500] else _perl_records(path, text)
    spectra = [_spectrum(path, r) for r in records if _is_mu(r.get("args", {}))]
    if not spectra:
        raise SpectrumFileError(f"{path}: the project holds no mu(E) group")
    if group is None:
        return spectra
    chosen = [s for s in spectra if fnmatch(s.metadata["athena.group"].lower(), group.lower())]
    if not chosen:
        labels = ", ".join(s.metadata["athena.group"] for s in spectra)
        raise SpectrumFileError(f"{path}: no group matches {group!r}; the groups are: {labels}")
    return chosen
