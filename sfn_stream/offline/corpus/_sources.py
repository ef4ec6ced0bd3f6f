"""matminer_mp: Materials Project structures with DFT labels, a structure source beside AMCSD.

../shared/data/matminer_mp holds 6,183 DFT-relaxed Materials Project structures from the datasets in
matminer 0.3.3 (formation energy and energy above hull: flla_2015; band gaps of non-metals:
dielectric_constant; bulk and shear moduli: elastic_tensor). Those with a 3d metal enter the corpus,
screened and deduplicated like AMCSD; their DFT values become labels with the source named
(``dft_*`` columns and ``dft_source`` in materials.parquet).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ._structures import CORPUS_METALS, SourceEntry

MATMINER_SOURCE = "matminer_mp"
MATMINER_DESCRIPTION = ("matminer_mp: Materials Project structures with DFT (PBE) labels from the matminer 0.3.3 "
                        "datasets flla_2015, dielectric_constant, elastic_tensor; ../shared/data/matminer_mp")

# matminer label -> corpus column
DFT_COLUMNS = {
    "formation_energy_per_atom": "dft_formation_energy_per_atom",
    "e_above_hull": "dft_e_above_hull",
    "band_gap": "dft_band_gap",
    "K_VRH": "dft_bulk_modulus",
    "G_VRH": "dft_shear_modulus",
}
# corpus column -> where its values come from (materials.parquet, LABEL_PROVENANCE)
DFT_PROVENANCE = {
    "dft_formation_energy_per_atom": "Materials Project PBE formation energy (eV/atom), matminer flla_2015 "
                                     "(Faber et al. 2015)",
    "dft_e_above_hull": "Materials Project PBE energy above the convex hull (eV/atom), matminer flla_2015",
    "dft_band_gap": "Materials Project PBE band gap (eV) of non-metals only (empty is not 'metal'), matminer "
                    "dielectric_constant (Petousis et al. 2016)",
    "dft_bulk_modulus": "Materials Project PBE bulk modulus K_VRH (GPa), matminer elastic_tensor (de Jong et al. 2015)",
    "dft_shear_modulus": "Materials Project PBE shear modulus G_VRH (GPa), matminer elastic_tensor",
}


def dft_labels(mp_id: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """The corpus's DFT label columns of one matminer_mp record, and ``dft_source`` naming where they come
    from ({} when it has none of them)."""
    labels = record.get("labels") or {}
    values = {column: float(labels[key]) for key, column in DFT_COLUMNS.items() if labels.get(key) is not None}
    if not values:
        return {}
    datasets = ", ".join(record.get("datasets") or ())
    return {**values, "dft_source": f"Materials Project PBE via matminer 0.3.3 ({datasets}), {mp_id}"}


def holds_corpus_metal(formula: str) -> bool:
    from pymatgen.core import Composition

    return any(el.symbol in CORPUS_METALS for el in Composition(formula).elements)


def matminer_entries(materials: Mapping[str, Mapping[str, Any]] | None = None) -> Iterator[SourceEntry]:
    """Source entries of the matminer_mp structures that hold a 3d metal (Ti..Zn), with their DFT labels.

    ``materials`` defaults to ../shared (:func:`sfn_stream.offline.shared.matminer_mp_materials`, which
    raises SharedDataMissing when it is absent)."""
    from pymatgen.core import Structure

    if materials is None:
        from sfn_stream.offline.shared import matminer_mp_materials

        materials = matminer_mp_materials()
    for mp_id in sorted(materials):
        record = materials[mp_id]
        if not holds_corpus_metal(record["formula"]):
            continue
        labels = dft_labels(mp_id, record)
        try:
            structure = Structure.from_str(record["poscar"], fmt="poscar")
        except Exception as err:  # noqa: BLE001 (pymatgen raises many kinds on a malformed POSCAR: a rejection)
            yield SourceEntry(MATMINER_SOURCE, mp_id, "", None, f"poscar_unreadable: {type(err).__name__}", labels)
            continue
        yield SourceEntry(MATMINER_SOURCE, mp_id, "", structure, None, labels)
