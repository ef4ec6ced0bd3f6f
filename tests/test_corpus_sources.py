"""New structure sources and the campaign order: matminer_mp structures with DFT labels beside AMCSD,
the OmniXAS multi-metal structures' every edge at the corpus settings, multi-edge and scarce-metal
materials first. Small real structures; the ../shared tests skip when it is absent.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.vasp import Poscar
from test_corpus import _cuprite, _hematite, _ilmenite, _rutile

from sfn_stream.cli import main
from sfn_stream.core.simulation import FeffSettings
from sfn_stream.offline.corpus import (
    LABEL_PROVENANCE,
    MATMINER_SOURCE,
    CampaignConfig,
    Item,
    ResultStore,
    SourceEntry,
    assemble_corpus,
    campaign_tiers,
    matminer_entries,
    plan_items,
    prepared_materials,
    screen_entries,
)
from sfn_stream.offline.shared import have_shared

FAST = FeffSettings(scf_radius=None, fms_radius=3.0, cluster_radius=5.0)



def _rock_salt(metal: str, a: float):
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), [metal, "O"], [[0, 0, 0], [0.5] * 3])




def _pyrite():
    return Structure.from_spacegroup("Pa-3", Lattice.cubic(5.417), ["Fe", "S"], [[0, 0, 0], [0.385] * 3])


def _delafossite():
    # CuFeO2, Cu+ and Fe3+ (Prewitt et al., Inorg. Chem. 10, 719 (1971))
    return Structure.from_spacegroup("R-3m", Lattice.hexagonal(3.0351, 17.166), ["Cu", "Fe", "O"],
                                     [[0, 0, 0], [0, 0, 0.5], [0, 0, 0.1066]])



def _matminer_record(structure, labels: dict, datasets=("flla_2015",)) -> dict:
    """A record as ../shared/data/matminer_mp stores it (POSCAR text, labels null where absent)."""
    every = {"formation_energy_per_atom": None, "e_above_hull": None, "band_gap": None, "refractive_index": None,
             "K_VRH": None, "G_VRH": None, "eij_max": None}
    return {"formula": structure.composition.reduced_formula, "poscar": str(Poscar(structure)),
            "datasets": list(datasets), "labels": {**every, **labels}}


def _matminer_records() -> dict:
    strained = _rutile()
    strained.scale_lattice(strained.volume * 1.02)  # the DFT-relaxed twin of the AMCSD rutile
    return {
        "mp-19009": _matminer_record(_rock_salt("Ni", 4.177), {"formation_energy_per_atom": -1.24,
                                                               "e_above_hull": 0.0, "band_gap": 2.3, "K_VRH": 190.0},
                                     ("flla_2015", "dielectric_constant", "elastic_tensor")),
        "mp-2657": _matminer_record(strained, {"formation_energy_per_atom": -3.5, "e_above_hull": 0.0}),
        "mp-23": _matminer_record(Structure(Lattice.cubic(3.52), ["Ni"] * 4,
                                            [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]), {}),
        "mp-149": _matminer_record(Structure(Lattice.cubic(5.43), ["Si"] * 2, [[0, 0, 0], [0.25] * 3]),
                                   {"formation_energy_per_atom": 0.0}),
    }


# --- matminer_mp as a source --------------------------------------------------------------------------


def test_a_matminer_structure_is_screened_with_its_dft_labels_and_planned():
    entries = list(matminer_entries(_matminer_records()))
    assert [e.source_id for e in entries] == ["mp-19009", "mp-23", "mp-2657"]  # Si holds no 3d metal
    kept, rejected = screen_entries(entries)
    assert {r.source_id: r.reason for r in rejected} == {"mp-23": "elements_1"}
    nio = next(m for m in kept if m.material_id == "mp-19009")
    assert (nio.source, nio.site_groups) == (MATMINER_SOURCE, {"Ni": [[0, 1, 2, 3]]})
    assert nio.dft_labels["dft_band_gap"] == 2.3 and nio.dft_labels["dft_bulk_modulus"] == 190.0
    assert "dft_shear_modulus" not in nio.dft_labels
    assert "mp-19009" in nio.dft_labels["dft_source"] and "dielectric_constant" in nio.dft_labels["dft_source"]
    config = CampaignConfig(workdir=Path("."), settings=FAST, metals=("Ti", "Ni"))
    plan = plan_items(kept, [], config)
    assert Item("feff", "mp-19009", FAST.key(), "Ni", 0) in plan
    assert Item("labels", "mp-19009", "labels1") in plan


def test_a_duplicate_of_an_amcsd_material_is_dropped_and_hands_over_its_dft_labels(tmp_path):
    """The campaign prepared AMCSD and OmniXAS first; matminer_mp is added to it: AMCSD rutile wins over its
    Materials Project twin, an mp-id already in the campaign (OmniXAS) wins over the same mp-id."""
    records = _matminer_records()
    records["mp-361"] = _matminer_record(_cuprite(), {"formation_energy_per_atom": -0.9})
    first = {"amcsd": lambda: [SourceEntry("amcsd", "11", "rutile", _rutile())],
             "omnixas": lambda: [SourceEntry("omnixas", "mp-361", "", _cuprite())]}
    materials, _, _ = prepared_materials(tmp_path, first, {"amcsd": "a", "omnixas": "o"}, progress=False)
    assert [m.material_id for m in materials] == ["amcsd-00011", "mp-361"]
    every = {**first, MATMINER_SOURCE: lambda: matminer_entries(records)}
    materials, rejections, sources = prepared_materials(
        tmp_path, every, {"amcsd": "a", "omnixas": "o", MATMINER_SOURCE: "m"}, progress=False)
    by_id = {m.material_id: m for m in materials}
    assert list(by_id) == ["amcsd-00011", "mp-361", "mp-19009"] and MATMINER_SOURCE in sources
    reasons = {r.source_id: r.reason for r in rejections}
    assert reasons["mp-2657"] == "duplicate_of amcsd-00011" and reasons["mp-361"] == "duplicate_of mp-361"
    assert by_id["amcsd-00011"].duplicates == ["mp-2657"]
    assert by_id["amcsd-00011"].dft_labels["dft_formation_energy_per_atom"] == -3.5
    assert by_id["mp-361"].source == "omnixas" and by_id["mp-361"].dft_labels["dft_formation_energy_per_atom"] == -0.9
    again, _, _ = prepared_materials(tmp_path, every, sources, progress=False)  # cached, with what was added
    assert [m.material_id for m in again] == list(by_id) and again[0].dft_labels == by_id["amcsd-00011"].dft_labels


# --- OmniXAS multi-metal structures -------------------------------------------------------------------


def test_an_omnixas_multi_metal_structure_gets_every_edge_and_its_cu_edge_here():
    kept, _ = screen_entries([SourceEntry("omnixas", "mp-3098", "", _delafossite()),
                              SourceEntry("omnixas", "mp-361", "", _cuprite())])
    config = CampaignConfig(workdir=Path("."), settings=FAST, metals=("Fe", "Cu"))
    plan = plan_items(kept, [], config)
    feff = Counter((i.material_id, i.element) for i in plan if i.kind == "feff")
    assert feff == {("mp-3098", "Fe"): 1, ("mp-3098", "Cu"): 1}  # cuprite keeps ../shared's Cu spectrum only
    # both enter with their labels before any FEFF site (their OmniXAS Cu spectra need none)
    first_feff = next(n for n, i in enumerate(plan) if i.kind == "feff")
    assert {i.material_id for i in plan[:first_feff]} == {"mp-3098", "mp-361"}


def _edge(metal: str) -> dict:
    from sfn_stream.core.spectra import k_edge_energy

    energy = k_edge_energy(metal) + np.linspace(-10, 130, 180)
    mu = 0.5 + np.arctan((energy - k_edge_energy(metal)) / 2) / np.pi
    return {"energy": energy.tolist(), "mu": mu.tolist(), "e0": k_edge_energy(metal), "feff_seconds": 1.0}


def test_assembly_keeps_dft_labels_and_puts_feff10_cu_on_omnixas_multi_metal_rows(tmp_path):
    """Synthetic FEFF edges (FEFF itself: test_feff_runner.py); everything else as assembled for real."""
    import pyarrow.parquet as pq

    kept, _ = screen_entries([*matminer_entries(_matminer_records()),
                              SourceEntry("omnixas", "mp-3098", "", _delafossite()),
                              SourceEntry("omnixas", "mp-361", "", _cuprite())])
    store = ResultStore(tmp_path / "results.jsonl")
    for material in kept:
        for metal, groups in material.site_groups.items():
            if material.material_id != "mp-361":
                for group in groups:
                    item = Item("feff", material.material_id, FAST.key(), metal, group[0])
                    store.append({**item.to_dict(), "ok": True, "seconds": 1.0, "value": _edge(metal)})
    manifest = assemble_corpus(kept, [], [], store.records(), FAST, tmp_path / "corpus")
    rows = {r["material_id"]: r for r in pq.read_table(tmp_path / "corpus" / "materials.parquet").to_pylist()}
    assert rows["mp-19009"]["dft_formation_energy_per_atom"] == -1.24 and rows["mp-19009"]["dft_band_gap"] == 2.3
    assert rows["mp-19009"]["dft_shear_modulus"] is None and rows["mp-3098"]["dft_source"] is None
    assert "matminer" in rows["mp-19009"]["dft_source"]
    assert {"dft_formation_energy_per_atom", "dft_band_gap", "dft_bulk_modulus"} <= set(LABEL_PROVENANCE)
    assert manifest["label_provenance"]["dft_band_gap"].startswith("DFT")
    absorbers = pq.read_table(tmp_path / "corpus" / "absorbers.parquet").to_pylist()
    source = {(a["material_id"], a["element"]): a["spectrum_source"] for a in absorbers}
    assert source[("mp-3098", "Cu")] == source[("mp-3098", "Fe")] == "feff10"
    assert source[("mp-361", "Cu")] == "omnixas_cu"
    assert manifest["multi_metal_with_all_edges_feff10"] == 1


# --- the order --------------------------------------------------------------------------------------


def test_the_order_puts_multi_edge_then_scarce_metal_materials_first():
    kept, _ = screen_entries([SourceEntry("amcsd", "1", "wustite", _rock_salt("Fe", 4.33)),
                              SourceEntry("amcsd", "2", "hematite", _hematite()),
                              SourceEntry("amcsd", "3", "pyrite", _pyrite()),
                              SourceEntry("amcsd", "4", "rutile", _rutile()),
                              SourceEntry("amcsd", "5", "TiO", _rock_salt("Ti", 4.18)),
                              SourceEntry("amcsd", "6", "ilmenite", _ilmenite())])
    config = CampaignConfig(workdir=Path("."), settings=FAST, metals=("Fe", "Ti"), target_per_metal=3)
    names = {m.material_id: m.name for m in kept}
    order = []
    for item in plan_items(kept, [], config):
        if item.kind == "feff" and names[item.material_id] not in order:
            order.append(names[item.material_id])
    # ilmenite (two edges) first; then the metal with fewer materials picks its cheapest, until each metal
    # has 3: rutile (Ti) comes before a third Fe material, and hematite (Fe's costliest) waits for the rest
    assert order == ["ilmenite", "wustite", "rutile", "pyrite", "TiO", "hematite"]
    tiers = {tier: [m.name for _, m in picks] for tier, picks in campaign_tiers(kept, config).items()}
    assert tiers == {"multi_edge": ["ilmenite"], "scarce_metals": ["wustite", "rutile", "pyrite", "TiO"],
                     "held_out": [], "rest": ["hematite"]}


def test_held_out_materials_come_before_the_other_remaining_ones():
    kept, _ = screen_entries([SourceEntry("amcsd", "1", "wustite", _rock_salt("Fe", 4.33)),
                              SourceEntry("amcsd", "2", "hematite", _hematite()),
                              SourceEntry("amcsd", "3", "pyrite", _pyrite()),
                              SourceEntry("amcsd", "4", "rutile", _rutile())])
    ids = {m.name: m.material_id for m in kept}
    config = CampaignConfig(workdir=Path("."), settings=FAST, metals=("Fe", "Ti"), target_per_metal=1,
                            held_out=frozenset({ids["hematite"]}))
    tiers = {tier: [m.name for _, m in picks] for tier, picks in campaign_tiers(kept, config).items()}
    # hematite, Fe's costliest, jumps the cheaper pyrite once the target tiers are done: it is a test material
    assert tiers == {"multi_edge": [], "scarce_metals": ["wustite", "rutile"], "held_out": ["hematite"],
                     "rest": ["pyrite"]}


def test_the_order_prefers_a_rarer_class_among_a_metals_cheapest_materials(tmp_path):
    from sfn_stream.offline.corpus import label_classes, load_order_classes
    from sfn_stream.offline.corpus._campaign import save_order_classes

    kept, _ = screen_entries([SourceEntry("amcsd", "1", "wustite", _rock_salt("Fe", 4.33)),
                              SourceEntry("amcsd", "2", "hematite", _hematite()),
                              SourceEntry("amcsd", "3", "pyrite", _pyrite())])
    names = {m.material_id: m.name for m in kept}
    records = [{"kind": "labels", "material_id": mid, "version": "labels1", "ok": True,
                "value": {"absorbers": {"Fe": {"oxidation_state_class": state, "cn_class": 6}}}}
               for mid, state in (("amcsd-00001", 2), ("amcsd-00002", 3), ("amcsd-00003", 2))]
    classes = label_classes(records)
    assert classes == {("amcsd-00001", "Fe"): "2/6", ("amcsd-00002", "Fe"): "3/6", ("amcsd-00003", "Fe"): "2/6"}

    def order(config):
        return [names[i.material_id] for i in plan_items(kept, [], config) if i.kind == "feff"]

    config = CampaignConfig(workdir=tmp_path, settings=FAST, metals=("Fe",))
    assert order(config) == ["wustite", "pyrite", "hematite"]  # by cost alone
    save_order_classes(tmp_path, classes)
    config.classes = load_order_classes(tmp_path)
    assert config.classes == classes
    assert order(config) == ["wustite", "hematite", "pyrite"]  # Fe3+ CN 6 before a second Fe2+ CN 6


# --- dry run and status on a campaign folder ------------------------------------------------------------


def test_plan_only_and_status_report_pending_sites_per_source(tmp_path, capsys):
    from sfn_stream.offline.corpus import CALIBRATION_CANDIDATES

    settings = CALIBRATION_CANDIDATES["noscf_fms4"]
    entries = {"amcsd": lambda: [SourceEntry("amcsd", "4", "rutile", _rutile())],
               MATMINER_SOURCE: lambda: matminer_entries(_matminer_records())}
    prepared_materials(tmp_path, entries, {"amcsd": "a", MATMINER_SOURCE: "m"}, progress=False)
    store = ResultStore(tmp_path / "results.jsonl")
    store.append({**Item("feff", "amcsd-00004", settings.key(), "Ti", 0).to_dict(), "ok": True, "seconds": 1.0,
                  "value": {**_edge("Ti"), "feff_seconds": 30.0}})
    base = ["dataset", "build", "--workdir", str(tmp_path), "--settings", "noscf_fms4", "--metals", "Ti,Ni",
            "--sources", "amcsd", "--no-seed", "--plan-only", "--no-progress", "--json"]
    assert main(base) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["pending_feff_per_source"] == {"reference": 2, MATMINER_SOURCE: 1} and plan["done"] == 1
    assert plan["materials_per_source"] == {"amcsd": 1, MATMINER_SOURCE: 1}  # mp-2657 is rutile's twin
    assert main(["dataset", "status", "--workdir", str(tmp_path), "--settings", "noscf_fms4", "--metals", "Ti,Ni",
                 "--workers", "2", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["pending_feff_per_source"] == {"reference": 2, MATMINER_SOURCE: 1}  # Ti and Ni metal
    assert status["feff_sites_per_hour"] == pytest.approx(240.0)  # 2 workers x 3600 s / 30 s (no finish times)
    assert status["eta_hours_all"] == pytest.approx(3 / 240, abs=0.05)


# --- the real matminer_mp file (../shared) --------------------------------------------------------------


@pytest.mark.skipif(not have_shared(), reason="../shared is absent")
def test_the_shared_matminer_structures_with_a_3d_metal_enter_with_their_labels():
    from sfn_stream.offline.shared import matminer_mp_materials

    records = matminer_mp_materials()
    sample = dict(sorted(records.items())[:300])
    entries = list(matminer_entries(sample))
    assert entries and all(e.source == MATMINER_SOURCE for e in entries)
    kept, _ = screen_entries(entries[:40])
    assert kept and all(m.metals for m in kept)
    for material in kept:
        labels = records[material.material_id]["labels"]
        assert material.dft_labels.get("dft_formation_energy_per_atom") == labels.get("formation_energy_per_atom")


def test_a_build_adds_the_new_source_runs_its_items_and_freezes_the_order_classes(tmp_path):
    """`build` on a campaign prepared without matminer_mp: the source is added, its labels run (real
    items, serially), and the classes its order was made with are kept for status and batch-export."""
    from sfn_stream.offline.corpus import build_corpus, load_order_classes

    config = CampaignConfig(workdir=tmp_path / "work", settings=FAST, metals=("Ti", "Ni"), kinds=("labels",))
    amcsd = {"amcsd": lambda: [SourceEntry("amcsd", "4", "rutile", _rutile())]}
    build_corpus(config, amcsd, {"amcsd": "a"}, tmp_path / "corpus", scheduler="serial", progress=False)
    assert load_order_classes(config.workdir) == {}  # frozen when the build started: no labels yet
    every = {**amcsd, MATMINER_SOURCE: lambda: matminer_entries(_matminer_records())}
    summary, _ = build_corpus(config, every, {"amcsd": "a", MATMINER_SOURCE: "m"}, tmp_path / "corpus",
                              scheduler="serial", progress=False)
    assert (summary.already_done, summary.ran, summary.succeeded) == (1, 1, 1)  # NiO's labels
    labels = {r["material_id"] for r in config.store.records() if r["kind"] == "labels"}
    assert labels == {"amcsd-00004", "mp-19009"}
    assert load_order_classes(config.workdir) == {("amcsd-00004", "Ti"): "4/6"}


def test_materials_seeded_from_the_snapshot_get_their_labels_before_any_new_feff_site():
    from sfn_stream.offline.corpus._campaign import seeded_materials

    kept, _ = screen_entries([SourceEntry("amcsd", "1", "wustite", _rock_salt("Fe", 4.33)),
                              SourceEntry("amcsd", "2", "hematite", _hematite())])
    records = [{"kind": "feff_material", "material_id": "amcsd-00002", "ok": True},
               {"kind": "feff_material", "material_id": "amcsd-00001", "ok": False}]
    config = CampaignConfig(workdir=Path("."), settings=FAST, metals=("Fe",), seeded=seeded_materials(records))
    assert config.seeded == {"amcsd-00002"}
    plan = [(item.kind, item.material_id) for item in plan_items(kept, [], config)]
    # hematite (seeded) is the costlier: by the tiers its labels would wait for wustite's FEFF sites
    assert plan[:3] == [(kind, "amcsd-00002") for kind in ("labels", "sticks", "teacher")]
    assert plan.count(("labels", "amcsd-00002")) == 1
    without = [(item.kind, item.material_id) for item in plan_items(kept, [], CampaignConfig(
        workdir=Path("."), settings=FAST, metals=("Fe",)))]
    assert without.index(("labels", "amcsd-00002")) > without.index(("feff", "amcsd-00001"))
