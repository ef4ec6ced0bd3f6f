"""Measured powder profiles from pdCIF files (IUCr powder CIF dictionary; Toby 2003).

Reads the profile loop of a Rietveld CIF: the angle column (or the range min/increment when the
loop has no angle column) and the best measured-intensity column. Blocks named ``*_simulated*``
(patterns computed afterwards, e.g. by PLATON) and ``_pd_calc_*`` columns are never used.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._files import check_input_size

ANGLE_TAGS = ("_pd_meas_2theta_scan", "_pd_proc_2theta_corrected", "_pd_meas_angle_2theta", "_pd_meas_2theta")
# Measured first; background-subtracted ("net") intensities only when nothing rawer exists.
INTENSITY_TAGS = (
    "_pd_meas_counts_total",
    "_pd_meas_intensity_total",
    "_pd_proc_intensity_total",
    "_pd_meas_counts_net",
    "_pd_meas_intensity_net",
    "_pd_proc_intensity_net",
)
WAVELENGTH_TAGS = ("_diffrn_radiation_wavelength", "_pd_proc_wavelength")
_TOKEN = re.compile(r"""'(?:[^']|'(?=\S))*'(?=\s|$)|"(?:[^"]|"(?=\S))*"(?=\s|$)|#.*|\S+""")
_ESD = re.compile(r"\(\d+\)$")


class PdCifError(ValueError):
    """The file holds no readable powder profile."""


@dataclass
class PdCifProfile:
    two_theta: np.ndarray  # degrees
    intensity: np.ndarray
    wavelength: float | None  # A; None when the file does not state it
    block: str
    angle_tag: str  # or "<range>" when computed from _pd_*_2theta_range_min/inc
    intensity_tag: str
    path: str
    notes: list[str] = field(default_factory=list)


@dataclass
class _Block:
    name: str
    items: dict[str, str] = field(default_factory=dict)
    loops: list[dict[str, list[str]]] = field(default_factory=list)


def _tokens(text: str):
    """CIF tokens as (token, quoted); ';' text fields become one quoted token."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(";"):
            field_lines = [line[1:]]
            i += 1
            while i < len(lines) and not lines[i].startswith(";"):
                field_lines.append(lines[i])
                i += 1
            yield "\n".join(field_lines), True
        else:
            for match in _TOKEN.finditer(line):
                token = match.group(0)
                if token.startswith("#"):
                    break
                if token[0] in "'\"":
                    yield token[1:-1], True
                else:
                    yield token, False
        i += 1


def parse_cif_blocks(text: str) -> list[_Block]:
    """Minimal CIF 1.1 parser: data blocks with their single items and loops (values as strings)."""
    blocks: list[_Block] = []
    block = _Block("")
    tokens = list(_tokens(text))
    i, n = 0, len(tokens)

    def is_keyword(tok, quoted):
        low = tok.lower()
        return not quoted and (tok.startswith("_") or low == "loop_" or low.startswith("data_"))

    while i < n:
        tok, quoted = tokens[i]
        low = tok.lower()
        if not quoted and low.startswith("data_"):
            block = _Block(tok[5:])
            blocks.append(block)
            i += 1
        elif not quoted and low == "loop_":
            i += 1
            tags = []
            while i < n and not tokens[i][1] and tokens[i][0].startswith("_"):
                tags.append(tokens[i][0].lower())
                i += 1
            values = []
            while i < n and not is_keyword(*tokens[i]):
                values.append(tokens[i][0])
                i += 1
            if tags:
                usable = len(values) - len(values) % len(tags)
                block.loops.append({tag: values[k:usable:len(tags)] for k, tag in enumerate(tags)})
        elif not quoted and tok.startswith("_"):
            if i + 1 < n and not is_keyword(*tokens[i + 1]):
                block.items[low] = tokens[i + 1][0]
                i += 2
            else:
                i += 1
        else:
            i += 1
    return blocks


def _number(value: str) -> float:
    value = _ESD.sub("", value.strip())
    try:
        return float(value)
    except ValueError:
        return math.nan


def _numbers(values: list[str]) -> np.ndarray:
    return np.array([_number(v) for v in values], dtype=float)


def read_pdcif(path: str | Path) -> PdCifProfile:
    """The measured powder profile of a pdCIF; raises :class:`PdCifError` when there is none, and
    :class:`~sfn_stream.core.spectra.InputTooLargeError` for a file too large to read."""
    path = Path(path)
    check_input_size(path)
    blocks = [b for b in parse_cif_blocks(path.read_text(errors="replace")) if "simulated" not in b.name.lower()]
    for block in blocks:
        profile = _profile_in_block(block, path)
        if profile is not None:
            if profile.wavelength is None:
                profile.wavelength = _wavelength(blocks)
            return profile
    raise PdCifError(
        f"{path} has no measured powder profile (no loop with one of {', '.join(INTENSITY_TAGS)}); "
        "is it a single-crystal CIF?"
    )


def _profile_in_block(block: _Block, path: Path) -> PdCifProfile | None:
    for loop in block.loops:
        intensity_tag = next((t for t in INTENSITY_TAGS if t in loop), None)
        if intensity_tag is None:
            continue
        intensity = _numbers(loop[intensity_tag])
        angle_tag = next((t for t in ANGLE_TAGS if t in loop), None)
        notes = []
        if angle_tag is not None:
            two_theta = _numbers(loop[angle_tag])
        else:
            two_theta = _angles_from_range(block, len(intensity))
            if two_theta is None:
                continue
            angle_tag = "<range>"
            notes.append("2theta from _pd_*_2theta_range_min/inc")
        wavelength = _wavelength([block])
        return PdCifProfile(two_theta, intensity, wavelength, block.name, angle_tag, intensity_tag, str(path), notes)
    return None


def _angles_from_range(block: _Block, n: int) -> np.ndarray | None:
    for prefix in ("_pd_meas_2theta_range_", "_pd_proc_2theta_range_"):
        start, inc = (_number(block.items.get(prefix + key, "?")) for key in ("min", "inc"))
        if math.isfinite(start) and math.isfinite(inc) and inc > 0:
            return start + inc * np.arange(n)
    return None


def _wavelength(blocks: list[_Block]) -> float | None:
    for block in blocks:
        for tag in WAVELENGTH_TAGS:
            value = _number(block.items.get(tag, "?"))
            if math.isfinite(value) and value > 0:
                return value
        for loop in block.loops:
            if "_diffrn_radiation_wavelength" in loop:
                values = _numbers(loop["_diffrn_radiation_wavelength"])
                values = values[np.isfinite(values) & (values > 0)]
                if len(values):
                    return float(values[0])  # first listed line (K-alpha1 by convention)
    return None
