"""Seeding a campaign from a corpus snapshot: a fresh machine takes the snapshot's FEFF spectra as done,
recomputes only the cheap items, and reassembles the same corpus; a changed snapshot is refused.

The snapshot is test_corpus's (three minerals, synthetic FEFF site spectra, real labels and sticks).
"""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from test_corpus import FAST, _materials, campaign, corpus  # noqa: F401 (module fixtures)

from sfn_stream.cli import main
from sfn_stream.offline.corpus import (
    CALIBRATION_CANDIDATES,
    CampaignConfig,
    SeedError,
    assemble_corpus,
    pending_items,
    plan_items,
    run_campaign,
    seed_campaign,
)
from sfn_stream.offline.corpus._structures import save_prepared
from sfn_stream.core.simulation import FeffSettings


def _fresh(tmp_path, name="fresh"):
    return CampaignConfig(workdir=tmp_path / name, settings=FAST, kinds=("feff", "labels", "sticks"))


def test_a_seeded_campaign_computes_no_feff_and_reassembles_the_same_corpus(corpus, tmp_path):
    snapshot, manifest = corpus
    materials = _materials()
    config = _fresh(tmp_path)
    added = seed_campaign(config.store, snapshot, FAST.key())
    assert (added["spectra"], added["failures"]) == (3, 0)
    summary = run_campaign(materials, [], config, scheduler="serial", progress=False)
    assert (summary.planned, summary.already_done, summary.ran, summary.failed) == (9, 3, 6, 0)
    assert {r["kind"] for r in config.store.records()} == {"feff_material", "labels", "sticks"}

    out = tmp_path / "again"
    again = assemble_corpus(materials, [], [], config.store.records(), FAST, out, sources={"test": "minerals"})
    assert again["files"] == manifest["files"] and again["content_hash"] == manifest["content_hash"]
    assert again["seeded_from"] == [manifest["content_hash"]]
    before = pd.read_parquet(snapshot / "absorbers.parquet").set_index("material_id")
    after = pd.read_parquet(out / "absorbers.parquet").set_index("material_id")
    for mid in before.index:
        assert list(after.loc[mid, "mu"]) == list(before.loc[mid, "mu"])
        assert after.loc[mid, "e0"] == before.loc[mid, "e0"]


def test_seeding_is_idempotent_and_ignores_other_settings(corpus, campaign, tmp_path):  # noqa: F811
    snapshot, _ = corpus
    config = _fresh(tmp_path)
    seed_campaign(config.store, snapshot, FAST.key())
    second = seed_campaign(config.store, snapshot, FAST.key())
    assert (second["spectra"], second["already_present"]) == (0, 3)
    # the campaign that wrote the snapshot has the site results: nothing to seed there
    own = campaign["config"].store
    assert seed_campaign(own, snapshot, FAST.key())["spectra"] == 0
    other = FeffSettings(scf_radius=None, fms_radius=4.0, cluster_radius=5.0)
    assert seed_campaign(_fresh(tmp_path, "other").store, snapshot, other.key())["spectra"] == 0


def test_a_seed_made_of_other_sites_leaves_those_sites_to_compute(corpus, tmp_path):
    snapshot, _ = corpus
    materials = _materials()
    config = _fresh(tmp_path)
    seed_campaign(config.store, snapshot, FAST.key())
    records = [json.loads(line) for line in config.store.path.read_text().splitlines()]
    hematite = next(r for r in records if r["material_id"] == "amcsd-00013")
    hematite["value"]["site_indices"] = [99]  # as if the structure had been screened differently
    config.store.path.write_text("".join(json.dumps(r) + "\n" for r in records))
    pending, done, _ = pending_items(plan_items(materials, [], config), config.store, retry_failed=False)
    assert done == 2
    assert [(i.kind, i.material_id) for i in pending if i.kind == "feff"] == [("feff", "amcsd-00013")]


def test_a_build_seeded_from_a_folder_without_a_corpus_is_a_clear_error(tmp_path, capsys):
    assert main(["dataset", "build", "--workdir", str(tmp_path / "w"), "--seed-from", str(tmp_path)]) == 2
    assert "no corpus there" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_a_changed_snapshot_is_refused_and_the_campaign_left_as_it_was(corpus, tmp_path):
    snapshot, _ = corpus
    copy = tmp_path / "copy"
    shutil.copytree(snapshot, copy)
    (copy / "splits.json").write_text((copy / "splits.json").read_text().replace("amcsd-00011", "amcsd-99999"))
    config = _fresh(tmp_path)
    with pytest.raises(SeedError, match="splits.json"):
        seed_campaign(config.store, copy, FAST.key())
    assert not config.store.path.exists()


def test_dataset_status_counts_seeded_sites(corpus, tmp_path, monkeypatch, capsys):
    snapshot, _ = corpus
    monkeypatch.setitem(CALIBRATION_CANDIDATES, "test_fast", FAST)
    config = _fresh(tmp_path)
    save_prepared(config.workdir / "materials.json.gz", _materials(), [], {"test": "minerals"})
    seed_campaign(config.store, snapshot, FAST.key())
    assert main(["dataset", "status", "--workdir", str(config.workdir), "--settings", "test_fast",
                 "--metals", "Ti,Cu,Fe", "--kinds", "feff,labels,sticks", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    # the reference solids (three metals, Cu2O, CuO, FeO, Fe2O3) are not in a snapshot's tables
    assert status["items"]["feff"] == {"seeded": 3, "pending": 7}
    assert status["materials_with_feff_spectra"] == {"Ti": 1, "Cu": 1, "Fe": 1}
    assert status["feff_spectra_seeded"] == 3


def test_a_fresh_workdir_does_not_overwrite_the_corpus_before_it_has_recomputed_the_labels(corpus, tmp_path,
                                                                                          monkeypatch, capsys):
    """`dataset build --assemble-only` on a new machine: its --out corpus seeds the spectra, but labels are
    recomputed, not seeded; until the fresh campaign has them, writing the corpus would lose them, so it is
    refused with the reason and the committed corpus stays as it was."""
    snapshot, manifest = corpus
    committed = tmp_path / "committed"
    shutil.copytree(snapshot, committed)
    monkeypatch.setitem(CALIBRATION_CANDIDATES, "test_fast", FAST)
    workdir = tmp_path / "fresh"
    save_prepared(workdir / "materials.json.gz", _materials(), [], {"test": "minerals"})
    before = {path.name: path.read_bytes() for path in committed.iterdir()}
    assert main(["dataset", "build", "--workdir", str(workdir), "--out", str(committed), "--assemble-only",
                 "--settings", "test_fast", "--metals", "Ti,Cu,Fe", "--json"]) == 2
    assert "would lose their labels" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in committed.iterdir()} == before
