"""The nine 3d metals as labelled corpus spectra (``metal_references.parquet``), so that a model learns
what a foil looks like.

The campaign computes each metal at the corpus settings first (its first inflection sets the metal's energy
offset); these spectra are kept as training examples too. Labels are facts of the pure element, not model
output: oxidation state 0; first-shell CN from the structure (bcc 8, fcc and hcp 12; alpha-Mn, whose sites
have 12-16 neighbours, has none); density from the structure; a metal, so band gap 0 eV and is-metal true;
formation energy 0 eV/atom (the element is its own reference); is-magnetic true for the room-temperature
ferromagnets Fe, Co, Ni and false for Ti, V, Cu, Zn (Kittel, Introduction to Solid State Physics, 8th ed.,
ch. 11-12), none for the antiferromagnets Cr and Mn (whether their local moments pass the corpus's 0.5 muB
threshold is not settled by a fact); no Fermi level (the teachers' absolute DFT scale has no counterpart).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ._spectra import IncompleteSpectrum
from ._structures import CorpusMaterial

METAL_REFERENCES = "metal_references.parquet"
FERROMAGNETS = ("Fe", "Co", "Ni")
NON_MAGNETIC = ("Ti", "V", "Cu", "Zn")
FIRST_SHELL_TOLERANCE = 1.15  # neighbours within 15 % of the nearest distance form the first shell
MAX_CN = 12  # the CN head's classes end at 12


def first_shell_cn(structure) -> int | None:
    """First-shell CN of a simple metal (bcc, fcc, hcp: at most two atoms in the primitive cell); None for
    the others (alpha-Mn, 58 atoms, sites with 12-16 neighbours: no one shell, no one class)."""
    if len(structure.get_primitive_structure()) > 2:
        return None
    counts = []
    for i in range(len(structure)):
        distances = np.array([n.nn_distance for n in structure.get_neighbors(structure[i], 4.0)])
        counts.append(int(np.sum(distances <= FIRST_SHELL_TOLERANCE * distances.min())))
    cn = int(round(float(np.mean(counts))))
    return cn if cn <= MAX_CN else None


def metal_reference_rows(references: Sequence[CorpusMaterial], results, offsets: dict[str, float]) -> list[dict[str, Any]]:
    """One row per computed metal reference (``metal-<El>``): its spectrum and its labels."""
    rows = []
    for reference in references:
        if not reference.material_id.startswith("metal-"):
            continue
        metal = reference.metals[0]
        try:
            spectrum = results.spectrum(reference, metal)
        except IncompleteSpectrum:
            continue
        structure = reference.structure
        rows.append({
            "material_id": reference.material_id, "element": metal, "formula": metal,
            "oxidation_state_class": 0, "cn_class": first_shell_cn(structure),
            "density": float(structure.density), "band_gap": 0.0, "is_metal": True,
            "formation_energy_per_atom": 0.0, "fermi_level": None,
            "is_magnetic": True if metal in FERROMAGNETS else (False if metal in NON_MAGNETIC else None),
            "energy_offset": offsets.get(metal),
            "energy": np.asarray(spectrum["energy"], np.float32).tolist(),
            "mu": np.asarray(spectrum["mu"], np.float32).tolist(),
        })
    return rows


def write_metal_references(out_dir: Path, rows: Sequence[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([
        ("material_id", pa.string()), ("element", pa.string()), ("formula", pa.string()),
        ("oxidation_state_class", pa.int64()), ("cn_class", pa.int64()), ("density", pa.float64()),
        ("band_gap", pa.float64()), ("is_metal", pa.bool_()), ("formation_energy_per_atom", pa.float64()),
        ("fermi_level", pa.float64()), ("is_magnetic", pa.bool_()), ("energy_offset", pa.float64()),
        ("energy", pa.list_(pa.float32())), ("mu", pa.list_(pa.float32()))])
    table = pa.Table.from_pylist(sorted(rows, key=lambda r: r["material_id"]), schema=schema)
    pq.write_table(table, Path(out_dir) / METAL_REFERENCES, compression="zstd", compression_level=19,
                   write_statistics=False)
