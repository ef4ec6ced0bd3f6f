"""Readers for spectrum files: XDI, column text/CSV with a header, and two-column .xy.

XDI follows the XAS Data Interchange specification 1.0/1.1 (https://github.com/XraySpectroscopy/XAS-Data-Interchange):
``# XDI/1.0`` version line, ``# Family.member: value`` fields, ``# Column.N: name units``,
an optional ``# ///`` line opening free comments, a ``#----`` separator, then an optional
comment line naming the columns, then whitespace-separated numbers.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "absorber_from_filename",
    "find_absorber",
    "preprocess_xanes_file",
    "read_spectrum",
    "read_xy",
    "xanes_channels",
]


from ._athena import is_athena_project, read_athena
from ._edges import TRANSITION_METALS_3D, element_symbol
from ._files import SpectrumFile, SpectrumFileError, read_lines


_FIELD = re.compile(r"^([A-Za-z0-9_]+)\.([A-Za-z0-9_]+)\s*:\s*(.*)$")
_FORTRAN_EXPONENT = re.compile(r"(?<=[0-9.])[dD](?=[+-]?[0-9])")


def _parse_rows(path: Path, lines: list[tuple[int, str]], delimiter: str | None) -> np.ndarray:
    rows: list[list[float]] = []
    for number, text in lines:
        parts = [p for p in (text.split(delimiter) if delimiter else text.split()) if p.strip() != ""]
        try:
            rows.append([float(_FORTRAN_EXPONENT.sub("e", p.strip())) for p in parts])
        except ValueError:
            raise SpectrumFileError(f"{path}: line {number} is not numeric: {text.strip()[:80]!r}") from None
        if rows and len(rows[-1]) != len(rows[0]):
            raise SpectrumFileError(
                f"{path}: line {number} has {len(rows[-1])} values, the first data line has {len(rows[0])}"
            )
    if not rows:
        raise SpectrumFileError(f"{path}: no data lines")
    return np.asarray(rows, dtype=float)


def _delimiter(line: str) -> str | None:
    """',' or ';' when the line uses one (European spreadsheets write ';'), else whitespace."""
    return next((d for d in (",", ";") if d in line), None)


def _split_names(text: str) -> list[str]:
    text = text.strip().lstrip("#").strip()
    delimiter = _delimiter(text)
    parts = text.split(delimiter) if delimiter else text.split()
    return [p.strip() for p in parts if p.strip()]


def _unique_names(names: list[str], n_columns: int) -> list[str]:
    names = list(names[:n_columns]) + [f"col{i + 1}" for i in range(len(names), n_columns)]
    seen: dict[str, int] = {}
    out = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        out.append(name if count == 0 else f"{name}_{count + 1}")
    return out


def _read_xdi(path: Path, lines: list[str]) -> SpectrumFile:
    metadata: dict[str, str] = {"XDI.version": lines[0].strip().lstrip("#").strip()}
    declared: dict[int, str] = {}
    comments: list[str] = []
    label_line: str | None = None
    data: list[tuple[int, str]] = []
    in_comments = after_separator = False
    for number, line in enumerate(lines[1:], start=2):
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("#"):
            data.append((number, stripped))
            continue
        body = stripped.lstrip("#").strip()
        if body.startswith("---"):
            after_separator = True
            continue
        if body.startswith("///"):
            in_comments = True
            continue
        if after_separator:
            label_line = body or label_line
            continue
        match = None if in_comments else _FIELD.match(body)
        if match is None:
            if body:
                comments.append(body)
            continue
        family, member, value = match.groups()
        metadata[f"{family}.{member}"] = value.strip()
        if family.lower() == "column" and member.isdigit():
            # "energy eV || PV name": the column name is the first word
            declared[int(member)] = value.split("||")[0].split()[0] if value.split() else f"col{member}"
    table = _parse_rows(path, data, None)
    n_columns = table.shape[1]
    if declared:
        names = [declared.get(i + 1, f"col{i + 1}") for i in range(n_columns)]
    elif label_line:
        names = _split_names(label_line)
    else:
        names = []
    names = _unique_names(names, n_columns)
    return SpectrumFile(
        columns={name: table[:, i] for i, name in enumerate(names)},
        metadata=metadata, format="xdi", path=str(path), comments=comments,
    )


def _fields(text: str) -> list[str]:
    return [p for p in re.split(r"[,;\s]+", text.strip()) if p]


def _looks_numeric(text: str) -> bool:
    parts = _fields(text)
    try:
        [float(_FORTRAN_EXPONENT.sub("e", p)) for p in parts if p]
    except ValueError:
        return False
    return bool(parts)


def _read_columns(path: Path, lines: list[str]) -> SpectrumFile:
    header: list[str] = []
    data: list[tuple[int, str]] = []
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if data or (not stripped.startswith("#") and _looks_numeric(stripped)):
            if stripped.startswith("#"):
                continue
            data.append((number, stripped))
        else:
            header.append(stripped)
    while data and not _looks_numeric(data[-1][1]):
        header.append(data.pop()[1])  # a footer after the table ("END", "*RAS_INT_END")
    if not data:
        raise SpectrumFileError(f"{path}: no numeric data lines found")
    if len(data) > 1 and len(_fields(data[0][1])) == 1 < len(_fields(data[1][1])):
        header.append(data.pop(0)[1])  # a point count before the columns (Fit2D .chi)
    delimiter = _delimiter(data[0][1])
    table = _parse_rows(path, data, delimiter)
    n_columns = table.shape[1]
    names: list[str] = []
    comments: list[str] = []
    metadata: dict[str, str] = {}
    for text in header:
        candidate = _split_names(text)
        if len(candidate) == n_columns and not _looks_numeric(text.lstrip("#")) and "=" not in text:
            names = candidate  # the last header line with one name per column wins
        else:
            body = text.lstrip("#").strip()
            comments.append(body)
            for key, value in re.findall(r"(\w+)=(\S+)", body):
                metadata[key] = value
    if not names and n_columns == 2:
        names, fmt = ["x", "y"], "xy"
    else:
        fmt = "csv" if delimiter else "columns"
    names = _unique_names(names, n_columns)
    return SpectrumFile(
        columns={name: table[:, i] for i, name in enumerate(names)},
        metadata=metadata, format=fmt, path=str(path), comments=comments,
    )


def read_spectrum(path: str | Path) -> SpectrumFile:
    """Read an Athena project of one mu(E) group (gzipped or not; :func:`read_athena` for several),
    an XDI file (recognised by its ``# XDI/`` first line, whatever the extension),
    a CSV/whitespace column file with an optional header line naming the columns, or a
    headerless two-column .xy file (columns ``x`` and ``y``). A file larger than
    :func:`max_input_bytes` raises :class:`InputTooLargeError` unread."""
    path = Path(path)
    if not path.is_file():
        raise SpectrumFileError(f"{path}: no such file")
    if is_athena_project(path):
        groups = read_athena(path)
        if len(groups) > 1:
            labels = ", ".join(g.metadata["athena.group"] for g in groups)
            raise SpectrumFileError(f"{path}: an Athena project of {len(groups)} groups ({labels}): choose one "
                                    "(read_athena(path, group=...), or --group on the command line)")
        return groups[0]
    lines = read_lines(path)
    first = next((line for line in lines if line.strip()), "")
    if not first:
        raise SpectrumFileError(f"{path}: file is empty")
    if first.strip().lstrip("#").strip().upper().startswith("XDI/"):
        return _read_xdi(path, lines)
    return _read_columns(path, lines)


def read_xy(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """First two numeric columns of a column file (x, y), e.g. a PXRD pattern (2theta, intensity)."""
    spectrum = read_spectrum(path)
    columns = list(spectrum.columns.values())
    if len(columns) < 2:
        raise SpectrumFileError(f"{path}: needs two columns (x, y), found {len(columns)}")
    return columns[0], columns[1]


# Column names (lower case, a trailing unit such as "(eV)" or "[a.u.]" removed) for each preprocess_xanes
# argument, most specific first. Athena/Larch exports name normalised columns norm, flat or nmu.
_CHANNEL_NAMES: dict[str, tuple[str, ...]] = {
    "energy": ("energy", "energy_ev", "e", "energy_readback", "en", "ene", "ev", "photon_energy", "x"),
    "mu": ("mu", "xmu", "mutrans", "mu_trans", "mut", "normtrans", "mufluor", "mu_fluor", "muf", "normfluor", "norm",
           "flat", "nmu",
           "mu_norm", "norm_mu", "normalized", "normalised", "absorption", "absorbance", "abs", "xanes", "y"),
    "i0": ("i0", "io"),
    "it": ("it", "itrans", "i1"),
    "ifluor": ("if", "ifluor", "ifl", "iff", "ifluo", "fluo", "fluor", "pips", "ipips"),
    "iref": ("iref", "irefer", "ir", "i2"),
}
_UNIT_SUFFIX = re.compile(r"\s*(\([^)]*\)|\[[^\]]*\]|/\s*\w+)\s*$")


def _channel_key(name: str) -> str:
    """'Energy (eV)' -> 'energy', 'mu(E)' -> 'mu', 'E/eV' -> 'e': the name without a trailing unit."""
    key = name.strip().lower()
    return _UNIT_SUFFIX.sub("", key) or key


def xanes_channels(spectrum: SpectrumFile) -> dict[str, Any]:
    """Map a file's columns to ``preprocess_xanes`` keyword arguments.

    Returns ``energy`` plus ``mu`` or raw channels (``i0``, ``it``, ``ifluor``, ``iref``) and,
    when the XDI header names them, ``absorber`` and ``edge``. A headerless two-column file is read as
    energy, mu (its columns are named x, y). When a file has both mu and raw
    channels the raw channels are used (the reference channel needs ``it`` anyway).
    """
    by_name: dict[str, str] = {}
    for name in spectrum.columns:
        by_name.setdefault(name.lower(), name)
        by_name.setdefault(_channel_key(name), name)
    found: dict[str, np.ndarray] = {}
    for argument, aliases in _CHANNEL_NAMES.items():
        for alias in aliases:
            if alias in by_name:
                found[argument] = spectrum.columns[by_name[alias]]
                break
    columns = ", ".join(spectrum.columns) or "(none)"
    if "energy" not in found and "angle" in by_name and spectrum.meta("Mono.d_spacing"):
        found["energy"] = _energy_from_angle(spectrum, spectrum.columns[by_name["angle"]])
    if "energy" not in found:
        raise SpectrumFileError(f"{spectrum.path}: no energy column; columns are: {columns}")
    raw = "i0" in found and ("it" in found or "ifluor" in found)
    if not raw and "mu" not in found:
        raise SpectrumFileError(
            f"{spectrum.path}: no mu column and no raw channels (i0 with it or ifluor); columns are: {columns}"
        )
    out: dict[str, Any] = {"energy": found["energy"]}
    if raw:
        for name in ("i0", "it", "ifluor", "iref"):
            if name in found:
                out[name] = found[name]
    else:
        out["mu"] = found["mu"]
        if "iref" in found and "it" in found:
            out["it"], out["iref"] = found["it"], found["iref"]
    symbol = (spectrum.meta("Element.symbol") or "").strip()
    if symbol:
        out["absorber"] = element_symbol(symbol)  # headers write fe and FE too
    edge = spectrum.meta("Element.edge")
    if edge:
        out["edge"] = edge.strip()
    return out


HC_EV_ANGSTROM = 12398.419843  # h c in eV A (CODATA 2018)


def _energy_from_angle(spectrum: SpectrumFile, angle: np.ndarray) -> np.ndarray:
    """Energies of a monochromator-angle column (degrees; XDI ``angle``) from Bragg's law with the header's
    ``Mono.d_spacing`` (A), as the XDI specification defines them."""
    try:
        d_spacing = float(spectrum.meta("Mono.d_spacing") or "nan")
    except ValueError:
        d_spacing = float("nan")
    if not d_spacing > 0:
        raise SpectrumFileError(f"{spectrum.path}: Mono.d_spacing {spectrum.meta('Mono.d_spacing')!r} is not a "
                                "spacing in A, so the angle column cannot become energies")
    return HC_EV_ANGSTROM / (2.0 * d_spacing * np.sin(np.radians(angle)))


def absorber_from_filename(name: str | Path) -> str | None:
    """The 3d transition metal a file name points to, e.g. 'Fe-K-ALS__Chromite.csv' -> 'Fe',
    'athena2__mn2s_003.csv' -> 'Mn', 'eutio3__Ti300.csv' -> 'Ti'; None when none is named.

    A token matches when it is the symbol itself (any case), or starts with the symbol followed
    by a digit, an upper-case letter or nothing else (CuHERFD, Fe3O4, mn2s).
    """
    stem = Path(name).name.rsplit(".", 1)[0]
    for token in re.split(r"[^A-Za-z0-9]+", stem):
        for symbol in TRANSITION_METALS_3D:
            if token.lower() == symbol.lower():
                return symbol
        for symbol in TRANSITION_METALS_3D:
            for form in (symbol, symbol.lower()):
                rest = token[len(form):]
                if token.startswith(form) and rest and (rest[0].isdigit() or (form == symbol and rest[0].isupper())):
                    return symbol
    return None


def find_absorber(channels: dict[str, Any], name: str | Path, elements: Any = None) -> tuple[str | None, str | None]:
    """``(absorber, source)`` of a file's scan, given its :func:`xanes_channels`: the header's ``Element.symbol``
    ("header"), else the 3d-metal K edge the energies show, among ``elements`` when given
    (:func:`absorber_from_scan`, "energies"), else the one the file name names ("file_name"); ``(None, None)``."""
    from ._xanes import absorber_from_scan

    if channels.get("absorber"):
        return channels["absorber"], "header"
    scanned = {k: channels.get(k) for k in ("mu", "i0", "it", "ifluor")}
    found = absorber_from_scan(channels["energy"], candidates=elements, **scanned)
    if found:
        return found, "energies"
    found = absorber_from_filename(name)
    return (found, "file_name") if found else (None, None)


def preprocess_xanes_file(path: str | Path, absorber: str | None = None, *, elements: Any = None, **options: Any):
    """Read a spectrum file and run :func:`preprocess_xanes` on it.

    The absorber is ``absorber`` if given, else :func:`find_absorber` (header, energies among ``elements``, file
    name). Raises :class:`SpectrumFileError` for an unreadable file or when no absorber can be determined.
    """
    from ._xanes import preprocess_xanes

    arguments = xanes_channels(read_spectrum(path))
    chosen = element_symbol(absorber) if absorber else find_absorber(arguments, path, elements)[0]
    arguments.pop("edge", None)
    arguments.pop("absorber", None)
    if not chosen:
        raise SpectrumFileError(
            f"{path}: no absorber given, none in the header (Element.symbol), no single 3d-metal K edge in "
            "the energies and none in the file name"
        )
    energy = arguments.pop("energy")
    return preprocess_xanes(energy, absorber=chosen, **arguments, **options)
