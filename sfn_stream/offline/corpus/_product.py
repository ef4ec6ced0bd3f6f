"""The corpus product: parquet tables + stick patterns + manifest, with a content hash.

Layout of a corpus folder (``data/corpus`` in the repository):

- ``materials.parquet``  one row per material: ids, formula, exact labels, teacher labels, split
- ``absorbers.parquet``  one row per (material, 3d metal): site labels, spectrum on FEFF's native
                         grid (float32 lists) with E0 and the metal energy offset to apply
- ``sticks.npz``         PXRD stick patterns (:class:`sfn_stream.core.simulation.StickTable`)
- ``splits.json``        material ids per split (fixed: ids keep their split as the corpus grows)
- ``references.json``    FEFF metal offsets per element and the oxide chemical-shift check
- ``metal_references.parquet``  the nine metals' spectra at the corpus settings with their labels (foils
                         as training examples; ``_metal_references``)
- ``rejections.csv.gz``  every structure left out, with its reason; ``failures.csv.gz``: failed items
- ``corpus.json``        manifest: version, settings, label provenance, counts, per-file and corpus hash

OmniXAS materials carry no spectrum here (their spectra come from ../shared and are not ours to
commit): their Cu rows say ``spectrum_source = "omnixas_cu"`` and have empty arrays.
"""

from __future__ import annotations

import csv
import datetime
import gzip
import hashlib
import io
import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from sfn_stream.core import paths
from sfn_stream.core.files import file_sha256
from sfn_stream.core.simulation import FeffSettings
from sfn_stream.offline.splits import SPLITS, pinned_splits, pxrd_formula_splits, stratified_splits
from ._audit import amcsd_cif_text, audit_material, audit_summary, duplicate_disagreements, write_findings
from ._items import ITEM_VERSIONS, SEED_KIND
from ._metal_references import METAL_REFERENCES, metal_reference_rows, write_metal_references
from ._sources import DFT_PROVENANCE
from ._spectra import IncompleteSpectrum, edge_positions, energy_offset, material_spectrum
from ._structures import CORPUS_METALS, CorpusMaterial, Rejection, rejection_tally

FORMAT_VERSION = "1"
CORPUS_DIR = paths.CORPUS_DIR
MANIFEST = "corpus.json"
DATA_FILES = ("materials.parquet", "absorbers.parquet", "sticks.npz", "splits.json", "references.json",
              "rejections.csv.gz", "failures.csv.gz", METAL_REFERENCES)

LABEL_PROVENANCE = {
    "density": "exact: pymatgen Structure.density (g/cm3)",
    "space_group_symbol": "exact: spglib through pymatgen SpacegroupAnalyzer, symprec 0.1",
    "space_group_number": "exact: spglib through pymatgen SpacegroupAnalyzer, symprec 0.1",
    "crystal_system": "exact: spglib through pymatgen SpacegroupAnalyzer, symprec 0.1",
    "oxidation_state": "exact: pymatgen BVAnalyzer (bond valence, O'Keeffe & Brese 1991); where it fails "
                       "Composition.oxi_state_guesses; then audited (sfn_stream.offline.corpus._audit: charge "
                       "balance and the stated formula; None where no formal state is defined: intermetallics, "
                       "borides, silicides, pnictides, metal-rich nitrides). The method of each row is in "
                       "absorbers.oxidation_method",
    "coordination_number": "exact: pymatgen CrystalNN (Pan et al. 2021) on the oxidation-state-decorated "
                           "structure, per inequivalent site, multiplicity-weighted (sfn_stream.core.chemistry); "
                           "audited against a sum-of-radii bond-length cutoff (sfn_stream.offline.corpus._audit)",
    "band_gap": "teacher: CGCNN band-gap, gated by CGCNN semi-metal-classification (metal -> 0 eV)",
    "is_metal": "teacher: CGCNN semi-metal-classification, P(metal) >= 0.5",
    "formation_energy_per_atom": "teacher: CGCNN formation-energy-per-atom (eV/atom)",
    "fermi_level": "teacher: CGCNN efermi (eV)",
    "is_magnetic": "teacher: CHGNet site magnetic moments, any |m| >= 0.5 muB",
    **{column: f"DFT: {text}; only for matminer_mp structures and materials merged with one (dft_source names "
                       "the mp-id and datasets)" for column, text in DFT_PROVENANCE.items()},
    "gap_type": "empty: direct/indirect gap needs DFT band structures; no offline source",
    "magnetic_ordering": "empty: needs DFT magnetic orderings; no offline source",
}

TEACHER_COLUMNS = ("band_gap", "is_metal", "metal_probability", "formation_energy_per_atom", "fermi_level",
                   "is_magnetic", "max_site_moment")
LABEL_COLUMNS = ("density", "crystal_system", "space_group_number", *TEACHER_COLUMNS, *DFT_PROVENANCE, "gap_type",
                 "magnetic_ordering")


def _schemas():
    import pyarrow as pa

    materials = pa.schema([
        ("material_id", pa.string()), ("source", pa.string()), ("source_id", pa.string()),
        ("name", pa.string()), ("formula", pa.string()), ("elements", pa.list_(pa.string())),
        ("metals", pa.list_(pa.string())), ("n_sites", pa.int32()), ("duplicates", pa.list_(pa.string())),
        ("split", pa.string()), ("density", pa.float64()), ("space_group_symbol", pa.string()),
        ("space_group_number", pa.int16()), ("crystal_system", pa.string()),
        ("band_gap", pa.float64()), ("is_metal", pa.bool_()), ("metal_probability", pa.float64()),
        ("formation_energy_per_atom", pa.float64()), ("fermi_level", pa.float64()),
        ("is_magnetic", pa.bool_()), ("max_site_moment", pa.float64()),
        ("gap_type", pa.string()), ("magnetic_ordering", pa.string()), ("teacher", pa.string()),
        *((column, pa.float64()) for column in DFT_PROVENANCE), ("dft_source", pa.string()),
    ])
    absorbers = pa.schema([
        ("material_id", pa.string()), ("element", pa.string()), ("n_sites", pa.int32()),
        ("n_inequivalent", pa.int32()), ("site_indices", pa.list_(pa.int32())),
        ("multiplicities", pa.list_(pa.int32())), ("oxidation_state_mean", pa.float64()),
        ("oxidation_state_class", pa.int16()), ("oxidation_method", pa.string()), ("cn_mean", pa.float64()),
        ("cn_class", pa.int16()), ("cn_mixed", pa.bool_()), ("site_cns", pa.list_(pa.int16())),
        ("spectrum_source", pa.string()), ("settings_key", pa.string()), ("e0", pa.float64()),
        ("energy_offset", pa.float64()), ("energy", pa.list_(pa.float32())), ("mu", pa.list_(pa.float32())),
        ("feff_seconds", pa.float64()), ("fallback_sites", pa.int16()),
    ])
    return materials, absorbers


@dataclass
class CampaignResults:
    """The store's records, indexed: FEFF site results per (material, metal), and per-material items."""

    feff: dict[tuple[str, str], dict[int, dict]]
    labels: dict[str, dict]
    sticks: dict[str, dict]
    teacher: dict[str, dict]
    failures: list[dict]
    # material spectra seeded from an earlier snapshot (sfn_stream.offline.corpus._seed), per (material, metal)
    seeded: dict[tuple[str, str], dict] = field(default_factory=dict)
    seeded_from: tuple[str, ...] = ()

    def spectrum(self, material: CorpusMaterial, metal: str) -> dict:
        """The material's spectrum for ``metal``: from its site results, else a seeded one made of the
        same sites; IncompleteSpectrum when neither is there."""
        groups = material.site_groups[metal]
        try:
            return material_spectrum(groups, self.feff.get((material.material_id, metal), {}))
        except IncompleteSpectrum:
            seeded = self.seeded.get((material.material_id, metal))
            if seeded is None or (seeded["site_indices"], seeded["multiplicities"]) != (
                    [g[0] for g in groups], [len(g) for g in groups]):
                raise
            return seeded

    @classmethod
    def from_records(cls, records: Iterable[dict], settings_key: str) -> CampaignResults:
        feff: dict[tuple[str, str], dict[int, dict]] = defaultdict(dict)
        per_kind: dict[str, dict[str, dict]] = {"labels": {}, "sticks": {}, "teacher": {}}
        latest: dict[str, dict] = {}
        for record in records:
            latest[record["key"]] = record
        failures, seeded, origins = [], {}, set()
        for record in latest.values():
            kind = record["kind"]
            wanted = settings_key if kind in ("feff", SEED_KIND) else ITEM_VERSIONS.get(kind)
            if record["version"] != wanted:
                continue
            if not record["ok"]:
                failures.append(record)
            elif kind == SEED_KIND:
                seeded[(record["material_id"], record["element"])] = record["value"]
                origins.add(record["seeded_from"]["content_hash"])
            elif kind == "feff":
                feff[(record["material_id"], record["element"])][record["site"]] = record["value"]
            else:
                per_kind[kind][record["material_id"]] = record["value"]
        return cls(dict(feff), per_kind["labels"], per_kind["sticks"], per_kind["teacher"], failures, seeded,
                   tuple(sorted(origins)))


def _failures_of(results: CampaignResults, materials: Sequence[CorpusMaterial]) -> list[dict]:
    """Failed items of these materials (a structure screened out since its failure is not listed)."""
    ids = {m.material_id for m in materials}
    return [r for r in results.failures if r["material_id"] in ids]


def reference_summary(references: Sequence[CorpusMaterial], results: CampaignResults) -> dict[str, Any]:
    """Metal energy offsets (per element, these settings) and E0 shifts of the oxide pairs."""
    offsets, oxides = {}, {}
    for reference in references:
        for metal in reference.metals:
            try:
                spectrum = results.spectrum(reference, metal)
            except IncompleteSpectrum:
                continue
            if reference.material_id.startswith("metal-"):
                offsets[metal] = energy_offset(spectrum["energy"], spectrum["mu"], metal)
            else:
                oxides[reference.name] = {"element": metal, "fallback_sites": spectrum["fallback_sites"],
                                          "feff_edge": edge_positions(spectrum["energy"], spectrum["mu"])}
    for name, entry in oxides.items():
        offset = offsets.get(entry["element"], {}).get("energy_offset")
        entry["calibrated_edge"] = None if offset is None else {k: v - offset for k, v in entry["feff_edge"].items()}
    shifts = {}
    for low, high in (("Cu2O", "CuO"), ("FeO", "Fe2O3")):
        if low in oxides and high in oxides:
            shifts[f"{high} - {low}"] = {k: oxides[high]["feff_edge"][k] - oxides[low]["feff_edge"][k]
                                         for k in oxides[low]["feff_edge"]}
    return {"energy_offsets": offsets, "oxides": oxides, "chemical_shifts_eV": shifts,
            "note": "chemical shifts per edge definition; half_height is the stable one (see "
                    "sfn_stream.offline.corpus.edge_positions); an offset is the same constant for both compounds of "
                    "one element, so the shift survives the calibration by construction"}


def _absorber_row(material: CorpusMaterial, metal: str, labels: dict | None, spectrum: dict | None,
                  source: str, settings_key: str | None, offset: float | None) -> dict[str, Any]:
    groups = material.site_groups[metal]
    site = (labels or {}).get("absorbers", {}).get(metal, {})
    return {
        "material_id": material.material_id, "element": metal, "n_sites": sum(len(g) for g in groups),
        "n_inequivalent": len(groups), "site_indices": [g[0] for g in groups],
        "multiplicities": [len(g) for g in groups],
        "oxidation_state_mean": site.get("oxidation_state_mean"),
        "oxidation_state_class": site.get("oxidation_state_class"),
        "oxidation_method": site.get("oxidation_method"), "cn_mean": site.get("cn_mean"),
        "cn_class": site.get("cn_class"), "cn_mixed": site.get("cn_mixed"),
        "site_cns": list(site["site_cns"]) if site.get("site_cns") is not None else None,
        "spectrum_source": source, "settings_key": settings_key,
        "e0": None if spectrum is None else spectrum["e0"],
        "energy_offset": offset,
        "energy": None if spectrum is None else np.asarray(spectrum["energy"], np.float32).tolist(),
        "mu": None if spectrum is None else np.asarray(spectrum["mu"], np.float32).tolist(),
        "feff_seconds": None if spectrum is None else spectrum["feff_seconds"],
        "fallback_sites": None if spectrum is None else spectrum["fallback_sites"],
    }


def _material_row(material: CorpusMaterial, labels: dict | None, teacher: dict | None) -> dict[str, Any]:
    labels, teacher = labels or {}, teacher or {}
    return {
        "material_id": material.material_id, "source": material.source, "source_id": material.source_id,
        "name": material.name, "formula": material.formula,
        "elements": sorted(el.symbol for el in material.structure.composition.elements),
        "metals": material.metals, "n_sites": len(material.structure), "duplicates": material.duplicates,
        "split": None, "density": labels.get("density"), "space_group_symbol": labels.get("space_group_symbol"),
        "space_group_number": labels.get("space_group_number"), "crystal_system": labels.get("crystal_system"),
        **{column: teacher.get(column) for column in TEACHER_COLUMNS},
        "gap_type": None, "magnetic_ordering": None,
        "teacher": json.dumps(teacher["teachers"], sort_keys=True) if teacher.get("teachers") else None,
        **{column: material.dft_labels.get(column) for column in (*DFT_PROVENANCE, "dft_source")},
    }


def assemble_corpus(
    materials: Sequence[CorpusMaterial],
    references: Sequence[CorpusMaterial],
    rejections: Sequence[Rejection],
    records: Iterable[dict],
    settings: FeffSettings,
    out_dir: str | Path = CORPUS_DIR,
    *,
    sources: Mapping[str, str] | None = None,
    metals: Sequence[str] = CORPUS_METALS,
    omnixas_cu_offset: float | None = None,
    audit_table: str | Path | None = None,
) -> dict[str, Any]:
    """Write the corpus folder from a campaign's results; returns the manifest.

    A material enters once one of its metals has a complete spectrum (all inequivalent sites), or
    an OmniXAS Cu spectrum. Existing ``splits.json`` assignments in ``out_dir`` are kept.
    ``omnixas_cu_offset``: the energy offset of the OmniXAS settings (FEFF fcc Cu at SCF 7 A, FMS 9 A),
    stored on the OmniXAS Cu rows; None leaves it empty there. ``audit_table``: where the label audit's
    findings for the materials in the corpus go (CSV; None: not written).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    key = settings.key()
    results = CampaignResults.from_records(records, key)
    refs = reference_summary(references, results)
    refs["omnixas_cu_energy_offset"] = omnixas_cu_offset
    offsets = {el: entry["energy_offset"] for el, entry in refs["energy_offsets"].items()}
    material_rows, absorber_rows, in_corpus, findings = [], [], [], []
    carried = committed_labels(out_dir, failed_label_items(results))
    for material in materials:
        labels = results.labels.get(material.material_id) or carried.get(material.material_id)
        if labels is not None:  # the label audit's rules decide (sfn_stream.offline.corpus._audit)
            audit = audit_material(material, labels,
                                   amcsd_cif_text(material.source_id) if material.source == "amcsd" else None)
            labels, findings = audit.labels, findings + audit.findings
        rows = []
        for metal in material.metals:
            if metal not in metals:
                continue
            try:
                spectrum = results.spectrum(material, metal)
            except IncompleteSpectrum:
                # an OmniXAS Cu edge not (yet) computed here: ../shared's spectrum, as a second fidelity
                if material.source == "omnixas" and metal == "Cu":
                    rows.append(_absorber_row(material, metal, labels, None, "omnixas_cu", None, omnixas_cu_offset))
                continue
            rows.append(_absorber_row(material, metal, labels, spectrum, "feff10", key, offsets.get(metal)))
        if rows:
            absorber_rows += rows
            material_rows.append(_material_row(material, labels, results.teacher.get(material.material_id)))
            in_corpus.append(material)
    _refuse_lost_materials(out_dir, material_rows)
    _refuse_lost_labels(out_dir, absorber_rows)
    findings += duplicate_disagreements(material_rows, absorber_rows)
    kept = {m.material_id for m in in_corpus}
    findings = [f for f in findings if f.material_id in kept]
    if audit_table is not None:
        write_findings(findings, audit_table)
    # the shared assignment wins over the corpus's own earlier one: one split for the corpus and every model
    previous = {**read_splits(out_dir), **pinned_splits()}
    strata = _strata(material_rows, absorber_rows)
    # a new material whose formula the PXRD splits already hold takes that split: the sync then moves nothing
    splits = stratified_splits(((r["material_id"], r["formula"], strata[r["material_id"]]) for r in material_rows),
                               previous=previous, formula_hints=pxrd_formula_splits())
    for row in material_rows:
        row["split"] = splits[row["material_id"]]
    _write_tables(out_dir, material_rows, absorber_rows)
    _write_sticks(out_dir, in_corpus, results, material_rows)
    (out_dir / "splits.json").write_text(json.dumps(
        {split: sorted(mid for mid, s in splits.items() if s == split) for split in SPLITS}, indent=0) + "\n")
    (out_dir / "references.json").write_text(json.dumps(refs, indent=1, sort_keys=True) + "\n")
    metal_rows = metal_reference_rows(references, results, offsets)
    write_metal_references(out_dir, metal_rows)
    _write_csv(out_dir / "rejections.csv.gz", ["source", "source_id", "name", "reason"],
               sorted((r.to_dict() for r in rejections), key=lambda r: (r["source"], r["source_id"])))
    _write_csv(out_dir / "failures.csv.gz", ["key", "kind", "material_id", "element", "site", "error", "seconds"],
               sorted(_failures_of(results, [*materials, *references]), key=lambda r: r["key"]))
    manifest = {
        "format_version": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "feff_settings": {**settings.to_dict(), "key": key, "description": settings.describe()},
        "item_versions": ITEM_VERSIONS,
        "sources": dict(sources or {}),
        "label_provenance": LABEL_PROVENANCE,
        "teachers": _teacher_versions(results),
        "energy_offsets": offsets,
        "rejections": rejection_tally(rejections),
        # content hashes of the snapshots whose material spectra seeded this campaign (sfn_stream.offline.corpus._seed)
        "seeded_from": list(results.seeded_from),
        "label_audit": audit_summary(findings),
        # materials whose label item failed in this campaign: their labels are the previous snapshot's
        "labels_carried_over": sorted(set(carried) & {row["material_id"] for row in material_rows}),
    }
    manifest.update(corpus_counts(material_rows, absorber_rows))
    manifest["metal_references"] = sorted(row["element"] for row in metal_rows)
    manifest["files"] = {name: file_sha256(out_dir / name) for name in DATA_FILES}
    manifest["content_hash"] = content_hash(manifest["files"])
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True, default=str) + "\n")
    return manifest


def _strata(material_rows, absorber_rows) -> dict[str, list[str]]:
    system = {row["material_id"]: row["crystal_system"] or "unknown" for row in material_rows}
    strata: dict[str, list[str]] = defaultdict(list)
    for a in absorber_rows:
        strata[a["material_id"]].append(f"{a['element']}|{system[a['material_id']]}")
    return strata


def _teacher_versions(results: CampaignResults) -> dict[str, str]:
    names = Counter(json.dumps(value.get("teachers"), sort_keys=True) for value in results.teacher.values())
    return json.loads(names.most_common(1)[0][0]) if names else {}


def corpus_counts(material_rows: Sequence[dict], absorber_rows: Sequence[dict]) -> dict[str, Any]:
    """The figures `dataset info` prints: per absorber, per crystal system, per source, labels, splits."""
    with_spectrum = [a for a in absorber_rows if a["spectrum_source"] in ("feff10", "omnixas_cu")]
    per_absorber = Counter(a["element"] for a in with_spectrum)
    computed = Counter(a["element"] for a in with_spectrum if a["spectrum_source"] == "feff10")
    amcsd = {r["material_id"] for r in material_rows if r["source"] == "amcsd"}
    amcsd_per_absorber = Counter(a["element"] for a in with_spectrum if a["material_id"] in amcsd)
    label_coverage = {column: sum(r[column] is not None for r in material_rows) for column in LABEL_COLUMNS}
    for column in ("oxidation_state_class", "cn_class"):
        label_coverage[f"absorber_{column}"] = sum(a[column] is not None for a in absorber_rows)
    return {
        "n_materials": len(material_rows),
        "n_absorber_spectra": len(with_spectrum),
        "materials_with_feff10": len({a["material_id"] for a in with_spectrum if a["spectrum_source"] == "feff10"}),
        "materials_per_source": dict(Counter(r["source"] for r in material_rows)),
        "materials_per_absorber": {el: per_absorber.get(el, 0) for el in CORPUS_METALS},
        "materials_per_absorber_feff10": {el: computed.get(el, 0) for el in CORPUS_METALS},
        "amcsd_materials_per_absorber": {el: amcsd_per_absorber.get(el, 0) for el in CORPUS_METALS},
        "materials_per_crystal_system": dict(Counter(r["crystal_system"] or "unknown" for r in material_rows)),
        "label_coverage": label_coverage,
        "absorber_rows": len(absorber_rows),
        "splits": dict(Counter(r["split"] for r in material_rows)),
        **edge_completeness(material_rows, absorber_rows),
    }


def edge_completeness(material_rows: Sequence[dict], absorber_rows: Sequence[dict]) -> dict[str, int]:
    """How many materials have a spectrum of every one of their 3d metals' K edges (multi-edge learning and
    the next-edge agent need those), overall and among materials with two or more 3d metals; ``_feff10``:
    every edge from this corpus's own FEFF10 calculation (one setting for all of a material's edges)."""
    sources: dict[str, dict[str, str]] = defaultdict(dict)
    for row in absorber_rows:
        if row["spectrum_source"] in ("feff10", "omnixas_cu"):
            sources[row["material_id"]][row["element"]] = row["spectrum_source"]
    complete, complete_feff10, multi = set(), set(), set()
    for row in material_rows:
        material, metals = row["material_id"], list(row["metals"] or ())
        have = sources.get(material, {})
        if metals and all(metal in have for metal in metals):
            complete.add(material)
            if all(have[metal] == "feff10" for metal in metals):
                complete_feff10.add(material)
        if len(metals) >= 2:
            multi.add(material)
    return {"materials_with_all_edges": len(complete), "multi_metal_materials": len(multi),
            "multi_metal_with_all_edges": len(multi & complete),
            "multi_metal_with_all_edges_feff10": len(multi & complete_feff10)}


class MaterialsMissing(RuntimeError):
    """Materials of the previous snapshot are not in this campaign: a snapshot now would drop them."""


def _refuse_lost_materials(out_dir: Path, material_rows) -> None:
    """A campaign without ``../shared`` prepares no OmniXAS or matminer_mp material (it says so once and goes
    on); a snapshot it wrote over the committed corpus would drop those materials with their spectra."""
    previous_path = Path(out_dir) / "materials.parquet"
    if not previous_path.is_file():
        return
    import pandas as pd

    previous = pd.read_parquet(previous_path, columns=["material_id", "source"])
    kept = {row["material_id"] for row in material_rows}
    lost = previous[~previous["material_id"].isin(kept)]
    if len(lost):
        by_source = ", ".join(f"{source} {n}" for source, n in lost["source"].value_counts().items())
        raise MaterialsMissing(f"{len(lost)} materials of the corpus in {out_dir} are not in this campaign "
                               f"({by_source}; e.g. {lost['material_id'].iloc[0]}): a snapshot would drop them. "
                               "Is ../shared beside the checkout (the OmniXAS and matminer_mp materials come from "
                               "it)? Build there, or write the snapshot elsewhere (--out)")


def failed_label_items(results: CampaignResults) -> set[str]:
    """Materials whose label item failed in this campaign (a timeout under load, an analyser error)."""
    return {r["material_id"] for r in results.failures if r["kind"] == "labels"}


def committed_labels(out_dir: Path, material_ids: set[str]) -> dict[str, dict]:
    """The previous snapshot's labels of ``material_ids``, shaped as ``compute_labels`` returns them.

    A label item that fails for good (or until ``--retry-failed``) would otherwise block every snapshot
    (LabelsPending) or drop the committed labels; the structure has not changed, so its labels stand. The
    label audit runs on them again. Materials the previous snapshot did not label are left out."""
    materials_path, absorbers_path = Path(out_dir) / "materials.parquet", Path(out_dir) / "absorbers.parquet"
    if not material_ids or not (materials_path.is_file() and absorbers_path.is_file()):
        return {}
    import pandas as pd

    compound = ("formula", "elements", "density", "crystal_system", "space_group_symbol", "space_group_number")
    site = ("n_sites", "n_inequivalent", "oxidation_state_class", "oxidation_state_mean", "oxidation_method",
            "cn_class", "cn_mean", "cn_mixed", "site_cns")
    materials = pd.read_parquet(materials_path, columns=["material_id", *compound])
    absorbers = pd.read_parquet(absorbers_path, columns=["material_id", "element", *site])
    materials = materials[materials["material_id"].isin(material_ids) & materials["density"].notna()]
    absorbers = absorbers[absorbers["material_id"].isin(set(materials["material_id"]))]
    out: dict[str, dict] = {}
    for row in materials.itertuples(index=False):
        out[row.material_id] = {**{c: _plain(getattr(row, c)) for c in compound}, "absorbers": {}}
    for row in absorbers.itertuples(index=False):
        labels = {c: _plain(getattr(row, c)) for c in site}
        labels["site_cns"] = tuple(labels["site_cns"] or ())
        out[row.material_id]["absorbers"][row.element] = {"element": row.element, "oxidation_reason": None, **labels}
    return out


def _plain(value):
    """A parquet cell as compute_labels would have written it (numpy scalars and arrays to Python, NaN to None)."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


class LabelsPending(RuntimeError):
    """The campaign has not (re)computed labels the previous snapshot had: a snapshot now would lose them."""


def _refuse_lost_labels(out_dir: Path, absorber_rows) -> None:
    """Labels are recomputed by each campaign, not seeded: on a fresh machine they are pending for a while,
    and a snapshot taken then would write rows without labels that the committed corpus has."""
    previous_path = Path(out_dir) / "absorbers.parquet"
    if not previous_path.is_file():
        return
    import pandas as pd

    previous = pd.read_parquet(previous_path, columns=["material_id", "element", "oxidation_method"])
    labelled = {(r.material_id, r.element) for r in previous.itertuples(index=False)
                if isinstance(r.oxidation_method, str)}
    lost = [(row["material_id"], row["element"]) for row in absorber_rows
            if (row["material_id"], row["element"]) in labelled and not row.get("oxidation_method")]
    if lost:
        raise LabelsPending(f"{len(lost)} absorber rows of the committed corpus would lose their labels (e.g. "
                            f"{lost[0][0]} {lost[0][1]}): the campaign has not recomputed them yet; let it run "
                            "(`sfn-stream dataset status`: labels pending) and assemble again")


def _write_tables(out_dir: Path, material_rows, absorber_rows) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    materials_schema, absorbers_schema = _schemas()
    material_rows = sorted(material_rows, key=lambda r: r["material_id"])
    absorber_rows = sorted(absorber_rows, key=lambda r: (r["material_id"], r["element"]))
    for name, rows, schema in (("materials.parquet", material_rows, materials_schema),
                               ("absorbers.parquet", absorber_rows, absorbers_schema)):
        table = pa.Table.from_pylist(rows, schema=schema)
        pq.write_table(table, out_dir / name, compression="zstd", compression_level=19,
                       use_dictionary=True, write_statistics=False)


def _write_sticks(out_dir: Path, in_corpus: Sequence[CorpusMaterial], results: CampaignResults,
                  material_rows: Sequence[dict]) -> None:
    from sfn_stream.core.simulation import StickPattern, StickTable

    rows = {row["material_id"]: row for row in material_rows}
    records = []
    for material in sorted(in_corpus, key=lambda m: m.material_id):
        sticks = results.sticks.get(material.material_id)
        if sticks is None:
            continue
        row = rows[material.material_id]
        pattern = StickPattern(np.asarray(sticks["q"], float), np.asarray(sticks["intensity"], float),
                               np.asarray(sticks["hkl"], np.int16).reshape(-1, 3))
        records.append({"id": material.material_id, "formula": material.formula,
                        "spacegroup": row["space_group_number"] or 0,
                        "crystal_system": row["crystal_system"] or "unknown", "sticks": pattern})
    StickTable.from_records(records, info={"source": "pymatgen XRDCalculator via sfn_stream.core.simulation."
                                                     "stick_pattern", "version": ITEM_VERSIONS["sticks"]}
                            ).save(out_dir / "sticks.npz")


def _write_csv(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    # mtime=0: the same rows give the same bytes, so the content hash only moves with content
    with gzip.GzipFile(path, "wb", mtime=0) as fh:
        fh.write(text.getvalue().encode())


def content_hash(files: Mapping[str, str]) -> str:
    """sha256 over the sorted ``name sha256`` lines of the data files."""
    text = "".join(f"{name} {files[name]}\n" for name in sorted(files))
    return hashlib.sha256(text.encode()).hexdigest()


# --- reading ------------------------------------------------------------------------------------


class CorpusMissing(FileNotFoundError):
    """No corpus at that path (build one with `sfn-stream dataset build`)."""


def read_splits(corpus_dir: str | Path = CORPUS_DIR) -> dict[str, str]:
    path = Path(corpus_dir) / "splits.json"
    if not path.is_file():
        return {}
    return {mid: split for split, ids in json.loads(path.read_text()).items() for mid in ids}


def read_manifest(corpus_dir: str | Path = CORPUS_DIR) -> dict[str, Any]:
    path = Path(corpus_dir) / MANIFEST
    if not path.is_file():
        raise CorpusMissing(f"no corpus manifest at {path}: build one with `sfn-stream dataset build`")
    return json.loads(path.read_text())


def snapshot_hash(corpus_dir: str | Path = CORPUS_DIR) -> str | None:
    """The corpus's content hash from its manifest (None without a readable manifest): what a model card or a
    calibration names as the snapshot it was fitted or measured on."""
    try:
        return read_manifest(corpus_dir).get("content_hash")
    except (CorpusMissing, ValueError):
        return None


def verify_corpus(corpus_dir: str | Path = CORPUS_DIR) -> dict[str, Any]:
    """Recompute the per-file hashes; ``ok`` False names the files that changed since the manifest."""
    manifest = read_manifest(corpus_dir)
    files = {name: file_sha256(Path(corpus_dir) / name) for name in manifest["files"]}
    changed = sorted(name for name in files if files[name] != manifest["files"][name])
    return {"ok": not changed and content_hash(files) == manifest["content_hash"], "changed": changed,
            "content_hash": content_hash(files)}


def read_corpus(corpus_dir: str | Path = CORPUS_DIR):
    """(materials, absorbers) as pandas DataFrames."""
    import pandas as pd

    read_manifest(corpus_dir)
    return (pd.read_parquet(Path(corpus_dir) / "materials.parquet"),
            pd.read_parquet(Path(corpus_dir) / "absorbers.parquet"))


def corpus_info(corpus_dir: str | Path = CORPUS_DIR, verify: bool = True) -> dict[str, Any]:
    """Counts and hash of a corpus, recomputed from its tables (and checked against the manifest)."""
    import pyarrow.parquet as pq

    manifest = read_manifest(corpus_dir)
    materials = pq.read_table(Path(corpus_dir) / "materials.parquet").to_pylist()
    absorbers = pq.read_table(Path(corpus_dir) / "absorbers.parquet",
                              columns=["material_id", "element", "spectrum_source", "oxidation_state_class",
                                       "cn_class"]).to_pylist()
    info = {"path": str(corpus_dir), "format_version": manifest["format_version"],
            "created": manifest["created"], "content_hash": manifest["content_hash"],
            "feff_settings": manifest["feff_settings"]["description"],
            "feff_settings_key": manifest["feff_settings"]["key"]}
    info.update(corpus_counts(materials, absorbers))
    info["n_sticks"] = len(np.load(Path(corpus_dir) / "sticks.npz")["ids"])
    info["teachers"] = manifest.get("teachers", {})
    info["energy_offsets"] = manifest.get("energy_offsets", {})
    info["rejections"] = manifest.get("rejections", {})
    info["metal_references"] = manifest.get("metal_references", [])
    if verify:
        info["hash_verified"] = verify_corpus(corpus_dir)["ok"]
    return info
