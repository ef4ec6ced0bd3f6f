"""The label audit on small real structures: the campaign's labels (bond valence, CrystalNN) of each
structure are computed for real, then audited; each test fails if its rule regressed.

Structures: ilmenite (Wechsler & Prewitt 1984), an ordered ulvospinel model with Ti on the
tetrahedral site (AMCSD 19931), MnB2 (AlB2 type), bcc Fe, B2 TiNi, rock-salt TiN,
antiperovskite Fe4N, chalcopyrite, and a TiNi cell misread so that Ti-Ni is 1.4 A.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from sfn_stream.cli import main
from sfn_stream.core.chemistry import structure_labels
from sfn_stream.core.simulation import FeffSettings
from sfn_stream.offline.corpus import (
    CORPUS_METALS,
    CorpusMaterial,
    Item,
    assemble_corpus,
    audit_material,
    metal_site_groups,
)
from sfn_stream.offline.corpus._audit import (
    bonding_class,
    duplicate_disagreements,
    implausible_geometry,
    parse_stated_formula,
)


def _ilmenite():
    return Structure.from_spacegroup("R-3", Lattice.hexagonal(5.0884, 14.0885), ["Fe", "Ti", "O"],
                                     [[0, 0, 0.35537], [0, 0, 0.14640], [0.3172, 0.0234, 0.2450]])


def _ulvospinel_ti_tetrahedral():
    # AMCSD 19931 "ulvospinel", an ordered I4_1/amd model of Fe2TiO4 with Ti on the tetrahedral site
    # (its origin-choice-2 coordinates moved to pymatgen's origin choice 1 by (0, -1/4, 1/8))
    return Structure.from_spacegroup("I4_1/amd", Lattice.tetragonal(5.9052, 8.1834), ["Fe", "Ti", "O"],
                                     [[0, -0.25, 0.625], [0, 0.5, 0.25], [0, -0.2207, 0.3772]])


def _mnb2():
    return Structure.from_spacegroup("P6/mmm", Lattice.hexagonal(3.007, 3.037), ["Mn", "B"],
                                     [[0, 0, 0], [1 / 3, 2 / 3, 0.5]])


def _iron():
    return Structure.from_spacegroup("Im-3m", Lattice.cubic(2.8665), ["Fe"], [[0, 0, 0]])


def _tini(a: float = 3.015):
    return Structure(Lattice.cubic(a), ["Ti", "Ni"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def _tin():
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.24), ["Ti", "N"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def _fe4n():
    return Structure(Lattice.cubic(3.795), ["Fe", "Fe", "Fe", "Fe", "N"],
                     [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0], [0.5, 0.5, 0.5]])


def _chalcopyrite():
    return Structure.from_spacegroup("I-42d", Lattice.tetragonal(5.289, 10.423), ["Cu", "Fe", "S"],
                                     [[0, 0, 0], [0, 0, 0.5], [0.2574, 0.25, 0.125]])


def _material(structure, name: str, source: str = "test") -> CorpusMaterial:
    return CorpusMaterial(f"{source}-{name}", source, name, name, structure.composition.reduced_formula, structure,
                          metal_site_groups(structure))


def _labels(structure) -> dict:
    metals = tuple(el for el in CORPUS_METALS if el in {e.symbol for e in structure.composition.elements})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return structure_labels(structure, absorbers=metals).to_dict()


def _audit(structure, name: str, source: str = "test", cif_text: str | None = None):
    return audit_material(_material(structure, name, source), _labels(structure), cif_text)


def test_ilmenite_labels_pass_the_audit_unchanged():
    result = _audit(_ilmenite(), "ilmenite")
    assert result.findings == []
    absorbers = result.labels["absorbers"]
    assert (absorbers["Ti"]["oxidation_state_class"], absorbers["Ti"]["cn_class"]) == (4, 6)
    assert (absorbers["Fe"]["oxidation_state_class"], absorbers["Fe"]["cn_class"]) == (2, 6)


def test_ulvospinel_with_ti_on_the_tetrahedral_site_becomes_ti4_with_its_cn_withheld():
    structure = _ulvospinel_ti_tetrahedral()
    before = _labels(structure)["absorbers"]
    assert before["Ti"]["oxidation_state_class"] == 2 and before["Ti"]["cn_class"] == 4  # the error the audit fixes
    result = _audit(structure, "ulvospinel", "amcsd", cif_text="_chemical_formula_sum 'Fe2 Ti O4'\n")
    ti, fe = result.labels["absorbers"]["Ti"], result.labels["absorbers"]["Fe"]
    assert (ti["oxidation_state_class"], fe["oxidation_state_class"]) == (4, 2)
    assert ti["cn_class"] is None  # the model's tetrahedral Ti is not the mineral's octahedral Ti
    rules = {(f.element, f.label): f.rule for f in result.findings}
    assert rules[("Ti", "oxidation_state")] == "rare_state" and rules[("Ti", "coordination_number")] == "site_misfit"


def test_without_a_stated_formula_bond_valences_of_a_relaxed_structure_stay():
    result = _audit(_ulvospinel_ti_tetrahedral(), "mp-model", "omnixas")
    assert result.labels["absorbers"]["Ti"]["oxidation_state_class"] == 2
    assert {f.rule for f in result.findings if f.label == "oxidation_state"} == {"bv_kept"}


def test_a_boride_has_no_formal_oxidation_state_and_keeps_its_twelve_boron_neighbours():
    structure = _mnb2()
    assert _labels(structure)["absorbers"]["Mn"]["oxidation_state_class"] is not None
    result = _audit(structure, "MnB2")
    mn = result.labels["absorbers"]["Mn"]
    assert mn["oxidation_state_class"] is None and mn["oxidation_method"] == "undefined_network"
    assert mn["cn_class"] == 12  # 12 B at 2.31 A in the AlB2 type, by both methods


def test_the_pure_metal_is_zero_and_an_intermetallic_undefined():
    iron = _audit(_iron(), "Fe").labels["absorbers"]["Fe"]
    assert (iron["oxidation_state_class"], iron["cn_class"]) == (0, 8)
    tini = _audit(_tini(), "TiNi").labels["absorbers"]
    assert tini["Ti"]["oxidation_state_class"] is None and tini["Ni"]["oxidation_state_class"] is None
    assert tini["Ti"]["cn_class"] == tini["Ni"]["cn_class"] == 8


def test_tin_keeps_ti3_while_metal_rich_fe4n_is_undefined():
    assert _audit(_tin(), "TiN").labels["absorbers"]["Ti"]["oxidation_state_class"] == 3
    assert bonding_class(_fe4n().composition) == "metal_rich_nitride"
    result = _audit(_fe4n(), "Fe4N")
    fe = result.labels["absorbers"]["Fe"]
    assert fe["oxidation_state_class"] is None
    assert fe["cn_class"] is None  # CrystalNN's lone N is not the site's coordination, 12 Fe shells are no class
    assert fe["oxidation_method"] == "undefined_metal_rich_nitride"
    assert [(f.label, f.rule) for f in result.findings] == [("coordination_number", "metallic_cn")]


def test_copper_with_sulfur_only_is_cu1():
    absorbers = _audit(_chalcopyrite(), "chalcopyrite").labels["absorbers"]
    assert (absorbers["Cu"]["oxidation_state_class"], absorbers["Fe"]["oxidation_state_class"]) == (1, 3)


def test_a_misread_cell_with_a_1_4_angstrom_bond_gets_no_labels():
    structure = _tini(2.42)  # Ti-Ni 2.10 A: still fine
    assert _audit(structure, "TiNi").labels["absorbers"]["Ti"]["cn_class"] is not None
    squeezed = Structure(Lattice.cubic(3.0), ["Ti", "Ni"], [[0, 0, 0], [0.27, 0.27, 0.27]])  # Ti-Ni 1.40 A
    result = _audit(squeezed, "TiNi-misread")
    assert all(a["oxidation_state_class"] is None and a["cn_class"] is None
               for a in result.labels["absorbers"].values())
    assert {f.rule for f in result.findings} == {"implausible_geometry"}


def _eskolaite(o_x: float = 0.3058):
    return Structure.from_spacegroup("R-3c", Lattice.hexagonal(4.959, 13.594), ["Cr", "O"],
                                     [[0, 0, 0.3475], [o_x, 0, 0.25]])


def test_a_metal_oxygen_bond_shorter_than_any_chromate_means_a_misread_cell():
    good = _eskolaite()  # Cr-O 1.97 and 2.01 A
    assert not implausible_geometry(good, metal_site_groups(good))
    # three Cr-O at 1.47 A (AMCSD 17966): above 0.70 x the covalent radii sum, below any real Cr-O bond
    bad = _eskolaite(0.13)
    assert implausible_geometry(bad, metal_site_groups(bad))
    result = _audit(bad, "Cr2O3-misread")
    assert result.labels["absorbers"]["Cr"]["cn_class"] is None


def test_a_cation_as_close_as_the_nearest_anion_means_a_misplaced_site():
    # Cu-S 2.05 A and Cu-Co 2.05 A (AMCSD 17667 carrollite's misread cell); chalcopyrite's Cu-Fe 3.7 A is fine
    misplaced = Structure(Lattice.cubic(5.0), ["Cu", "S", "Co"], [[0, 0, 0], [0.41, 0, 0], [0, 0.41, 0]])
    assert implausible_geometry(misplaced, metal_site_groups(misplaced))
    assert not implausible_geometry(_chalcopyrite(), metal_site_groups(_chalcopyrite()))


def test_refinements_of_one_phase_with_different_labels_are_listed_and_kept():
    materials = [{"material_id": mid, "source": "amcsd", "name": "Karelianite", "formula": formula,
                  "space_group_number": sg}
                 for mid, formula, sg in (("a-1", "V2O3", 167), ("a-2", "V4O6", 167), ("a-3", "V2O3", 12))]
    absorbers = [{"material_id": mid, "element": "V", "oxidation_state_class": 3, "cn_class": cn}
                 for mid, cn in (("a-1", 6), ("a-2", 3), ("a-3", 3))]
    found = duplicate_disagreements(materials, absorbers)
    assert sorted((f.material_id, f.label, f.value, f.second_value, f.kept) for f in found) == [
        ("a-1", "coordination_number", 6, 3, 6), ("a-2", "coordination_number", 3, 6, 3)]
    assert not any(f.changed for f in found) and "a-2" in found[0].second_method


def test_stated_formulas_include_hydrate_water_and_names_are_not_formulas():
    composition = parse_stated_formula("LaCr(CN)6.5H2O")
    assert composition.get_el_amt_dict() == pytest.approx({"La": 1, "Cr": 1, "C": 6, "N": 6, "H": 10, "O": 5})
    assert parse_stated_formula("Hematite") is None


def test_assembly_writes_the_audited_labels(tmp_path):
    from sfn_stream.core.spectra import k_edge_energy

    settings = FeffSettings(scf_radius=None, fms_radius=3.0, cluster_radius=5.0)
    materials = [_material(_mnb2(), "MnB2"), _material(_ilmenite(), "ilmenite")]
    records = []
    for material in materials:
        records.append({**Item("labels", material.material_id, "labels1").to_dict(), "ok": True, "seconds": 1.0,
                        "value": _labels(material.structure)})
        for metal, groups in material.site_groups.items():
            energy = k_edge_energy(metal) + np.linspace(-10, 130, 180)
            mu = 0.5 + np.arctan((energy - k_edge_energy(metal)) / 2) / np.pi
            for group in groups:
                records.append({**Item("feff", material.material_id, settings.key(), metal, group[0]).to_dict(),
                                "ok": True, "seconds": 1.0, "value": {"energy": energy.tolist(), "mu": mu.tolist(),
                                                                      "e0": k_edge_energy(metal), "feff_seconds": 1.0}})
    manifest = assemble_corpus(materials, [], [], records, settings, tmp_path)
    rows = pd.read_parquet(tmp_path / "absorbers.parquet").set_index(["material_id", "element"])
    assert pd.isna(rows.loc[("test-MnB2", "Mn"), "oxidation_state_class"])
    assert rows.loc[("test-MnB2", "Mn"), "oxidation_method"] == "undefined_network"
    assert rows.loc[("test-ilmenite", "Ti"), "oxidation_state_class"] == 4
    assert manifest["label_audit"]["changed_oxidation_states"] == 1


def test_dataset_audit_on_a_missing_corpus_is_a_clear_error(tmp_path, capsys):
    assert main(["dataset", "audit", str(tmp_path / "nowhere"), "--json"]) == 2
    assert "no corpus manifest" in capsys.readouterr().err


# --- teacher audit --------------------------------------------------------------------------------


def test_the_measured_properties_table_has_thirty_cited_compounds_with_resolvable_structures():
    from pymatgen.core import Composition

    from sfn_stream.offline.corpus import EXPERIMENT_TABLE
    from sfn_stream.offline.corpus._teacher_audit import (
        experiment_structure,
        read_experiment_table,
    )

    rows = read_experiment_table(EXPERIMENT_TABLE)
    assert len(rows) >= 30 and all(row["citation"].strip() for row in rows)
    assert all(row["is_metal"] is not None or row["local_moment"] is not None for row in rows)
    for row in rows:
        if row["structure"].startswith("mp:"):
            continue  # matminer_mp structures live in ../shared
        structure = experiment_structure(row["structure"], row["formula"])
        reduced = structure.composition.reduced_formula
        assert reduced == Composition(row["formula"]).reduced_formula, row["compound"]


def test_the_gate_overrules_cgcnn_only_for_an_open_shell_cation_with_a_local_moment():
    from sfn_stream.offline.corpus._teacher_audit import gated_is_metal

    nio = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.177), ["Ni", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    zno_like = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.28), ["Zn", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert not gated_is_metal(True, 1.7, nio.composition, {"Ni": 2.0})  # Ni2+ d8 with a moment
    assert gated_is_metal(True, 0.1, nio.composition, {"Ni": 2.0})  # no local moment: CGCNN stands
    assert gated_is_metal(True, 1.0, zno_like.composition, {"Zn": 2.0})  # d10 is closed-shell
    assert gated_is_metal(True, 2.5, _iron().composition, {"Fe": 0.0})  # a metal has no formal state


def test_teacher_audit_runs_the_teachers_on_a_measured_table(tmp_path):
    pytest.importorskip("chgnet")
    from sfn_stream.offline.corpus._teacher_audit import (
        experiment_metrics,
        experiment_rows,
    )

    table = tmp_path / "measured.csv"
    table.write_text("compound,formula,structure,band_gap_ev,is_metal,local_moment,magnetic_order,citation\n"
                     "Cu (fcc),Cu,metal:Cu,0,true,false,diamagnetic metal,Kittel (2005)\n"
                     "CoO,CoO,rocksalt:4.2615,2.5,false,true,antiferromagnetic,van Elp et al. (1991)\n")
    rows = experiment_rows(table)
    assert [r["compound"] for r in rows] == ["Cu (fcc)", "CoO"]
    assert all(r["teacher_is_metal"] is not None and r["max_site_moment"] >= 0 for r in rows)
    metrics = experiment_metrics(rows)
    assert metrics["n_compounds"] == metrics["is_metal_n"] == metrics["band_gap_n"] == 2
    assert 0 <= metrics["is_metal_accuracy"] <= 1


def test_label_quality_carries_the_measured_errors_rounded_and_says_when_dft_was_absent():
    from sfn_stream.offline.corpus import label_quality

    result = {"dft_corpus": None, "experiment": {"is_metal_accuracy": 0.912345678, "is_metal_n": 40}}
    quality = label_quality(result)
    assert quality["against_experiment"] == {"is_metal_accuracy": 0.9123, "is_metal_n": 40}
    assert "absent" in quality["against_dft"]
