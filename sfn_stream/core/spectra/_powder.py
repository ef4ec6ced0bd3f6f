"""Powder patterns from files: pdCIF, or columns as diffractometers and pyFAI/Fit2D integrations write them.

A synchrotron powder pattern is usually an azimuthal integration: pyFAI's ``.xy``/``.dat`` name the axis in
their column line (``2th_deg``, ``q_nm^-1``, ``q_A^-1``) and the wavelength in a header line
(``# Wavelength: 1.0332e-10 m``); Fit2D's ``.chi`` has three text lines and a point count before the data.
The axis and wavelength a file states are used unless the caller gives them; q in nm^-1 becomes 1/A.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._files import SpectrumFileError, check_input_size, read_lines

__all__ = ["CU_K_ALPHA1", "PowderFile", "read_powder_file"]

CU_K_ALPHA1 = 1.5406  # A: the wavelength a pattern that states none is read at (laboratory Cu tubes)

_WAVELENGTH = re.compile(r"wave_?length\s*[:=]\s*([0-9.eE+-]+)\s*(m|nm|a|å|angstrom)?\b", re.IGNORECASE)
_METRES_TO_ANGSTROM = {"m": 1e10, "nm": 10.0, "a": 1.0, "å": 1.0, "angstrom": 1.0}


@dataclass
class PowderFile:
    """x (2theta in degrees, or Q in 1/A), intensity, and what the file said of them."""

    x: np.ndarray
    intensity: np.ndarray
    axis: str | None  # "2theta" or "q" when the file names its axis, else None
    wavelength: float | None  # A, when the file states it
    path: str
    notes: list[str] = field(default_factory=list)


def _axis_of(name: str) -> tuple[str | None, float]:
    """("2theta" | "q" | None, factor to 1/A or degrees) from a column name such as 2th_deg or q_nm^-1."""
    key = name.strip().lower().replace(" ", "")
    if any(tag in key for tag in ("2th", "2-theta", "twotheta", "two_theta", "tth", "angle")):
        return "2theta", 1.0
    if key.startswith("q"):
        return "q", 0.1 if "nm" in key else 1.0
    return None, 1.0


def _wavelength(comments: list[str]) -> float | None:
    for line in comments:
        match = _WAVELENGTH.search(line)
        if match:
            value = float(match.group(1)) * _METRES_TO_ANGSTROM[(match.group(2) or "a").lower()]
            if value < 1e-3 and (match.group(2) or "").lower() != "m":
                value *= 1e10  # pyFAI writes metres; a bare number this small is metres too
            if 0.05 < value < 5.0:
                return value
    return None


def _read_xrdml(path: Path) -> PowderFile:
    """PANalytical XRDML: the first scan's 2Theta positions (start/end, or a list) and intensities (or counts),
    and the K-alpha1 wavelength."""
    import xml.etree.ElementTree as ElementTree

    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as exc:
        raise SpectrumFileError(f"{path}: XRDML that is not well-formed XML ({exc})") from None
    find = {el.tag.rsplit("}", 1)[-1]: el for el in root.iter()}  # first element of each name, namespaces dropped
    values = find.get("intensities") if "intensities" in find else find.get("counts")
    positions = next((el for el in root.iter() if el.tag.endswith("positions") and "2theta" in el.get("axis", "").lower()),
                     None)
    if values is None or positions is None:
        raise SpectrumFileError(f"{path}: XRDML without 2Theta positions and intensities")
    intensity = np.array(values.text.split(), dtype=float)
    listed = [el for el in positions if el.tag.endswith("listPositions")]
    if listed:
        x = np.array(listed[0].text.split(), dtype=float)
    else:
        bounds = {el.tag.rsplit("}", 1)[-1]: float(el.text) for el in positions}
        x = np.linspace(bounds["startPosition"], bounds["endPosition"], len(intensity))
    wavelength = float(find["kAlpha1"].text) if "kAlpha1" in find else None
    return PowderFile(x, intensity, "2theta", wavelength, str(path), ["PANalytical XRDML"])


def _read_ras(path: Path) -> PowderFile:
    """Rigaku RAS: ``*`` header lines (``*HW_XG_WAVE_LENGTH_ALPHA1``), rows of 2theta, intensity, attenuator
    factor between ``*RAS_INT_START`` and ``*RAS_INT_END``; intensity times the factor, as Rigaku plots it."""
    rows, wavelength, inside = [], None, False
    for line in read_lines(path):
        text = line.strip()
        if text.startswith("*RAS_INT_START"):
            inside = True
        elif text.startswith("*RAS_INT_END"):
            break
        elif text.startswith("*HW_XG_WAVE_LENGTH_ALPHA1"):
            wavelength = float(text.split(None, 1)[1].strip().strip('"'))
        elif inside and text and not text.startswith("*"):
            rows.append([float(v) for v in text.split()])
    if not rows:
        raise SpectrumFileError(f"{path}: Rigaku RAS without data between *RAS_INT_START and *RAS_INT_END")
    table = np.array(rows)
    factor = table[:, 2] if table.shape[1] > 2 else 1.0
    return PowderFile(table[:, 0], table[:, 1] * factor, "2theta", wavelength, str(path), ["Rigaku RAS"])


def read_powder_file(path: str | Path) -> PowderFile:
    """A powder pattern: a pdCIF (``.cif``), PANalytical XRDML, Rigaku RAS, or the first two columns of a column
    file (headerless .xy, pyFAI, Fit2D .chi, GSAS .xye). Raises :class:`SpectrumFileError` with the file named."""
    from ._pdcif import read_pdcif
    from ._readers import read_spectrum

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".cif":
        profile = read_pdcif(path)
        return PowderFile(profile.two_theta, profile.intensity, "2theta", profile.wavelength, str(path),
                          list(profile.notes))
    if suffix in (".xrdml", ".ras"):
        check_input_size(path)
        try:
            return _read_xrdml(path) if suffix == ".xrdml" else _read_ras(path)
        except (ValueError, KeyError, AttributeError, IndexError) as exc:
            if isinstance(exc, SpectrumFileError):
                raise
            raise SpectrumFileError(f"{path}: a {suffix} file that cannot be read ({exc!r})") from None
    spectrum = read_spectrum(path)
    columns = list(spectrum.columns.items())
    if len(columns) < 2:
        raise SpectrumFileError(f"{path}: needs two columns (x, intensity), found {len(columns)}")
    (name, x), (_, y) = columns[0], columns[1]
    axis, factor = _axis_of(name) if spectrum.format != "xy" else (None, 1.0)
    notes = [f"axis {axis} from the column name {name!r}"] if axis else []
    if factor != 1.0:
        notes.append("q in nm^-1 converted to 1/A")
    wavelength = _wavelength(spectrum.comments + [f"{k}: {v}" for k, v in spectrum.metadata.items()])
    if wavelength is not None:
        notes.append(f"wavelength {wavelength:.5g} A from the header")
    return PowderFile(np.asarray(x) * factor, np.asarray(y), axis, wavelength, str(path), notes)
