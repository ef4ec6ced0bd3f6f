"""Peak-token PXRD classifier, its training, the stick cache and ``sfn-stream evaluate xrd`` (issue 13)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sfn_stream.cli import main
from sfn_stream.core.chemistry import CRYSTAL_SYSTEMS
from sfn_stream.core.networks import XrdClassifier, load_bundle
from sfn_stream.core.networks._xrd_peaks import find_peaks
from sfn_stream.core.simulation import StickPattern, StickTable, synthesize_pattern
from sfn_stream.core.spectra import XRD_Q_GRID
from sfn_stream.offline.evaluation.xrd_eval import (
    CLEAN,
    NOISY,
    NearestNeighbourBaseline,
    evaluate_xrd,
    protocol_conditions,
    protocol_patterns,
)
from sfn_stream.offline.training._xrd_cache import StickCache, compute
from sfn_stream.offline.training._xrd_peak_training import (
    extended_splits,
    splits_for,
    train_peak_bundle,
    with_impurity,
)

# one space group per crystal system, for fake tables
_SPACE_GROUP = {"triclinic": 2, "monoclinic": 14, "orthorhombic": 62, "tetragonal": 139, "trigonal": 166,
                "hexagonal": 194, "cubic": 225}


def _sticks(q, intensity=None) -> StickPattern:
    q = np.asarray(q, dtype=float)
    return StickPattern(q, np.ones(len(q)) if intensity is None else np.asarray(intensity, float),
                        np.ones((len(q), 3), dtype=np.int16))


def _table(n_per_class: int = 6) -> StickTable:
    """Each class has its own reflection spacing, jittered per structure: learnable, never identical."""
    rng = np.random.default_rng(0)
    records = []
    for k, system in enumerate(CRYSTAL_SYSTEMS):
        for j in range(n_per_class):
            base = 1.0 + 0.1 * k + rng.uniform(0, 0.02)
            q = base * np.sqrt(np.arange(1, 12))
            records.append({"id": f"fake:{system}:{j}", "formula": f"X{k}Y{j}", "spacegroup": _SPACE_GROUP[system],
                            "crystal_system": system, "sticks": _sticks(q[q < 7], rng.uniform(0.2, 1.0, (q < 7).sum()))})
    return StickTable.from_records(records, {"sources": ["fake"]})


def test_peaks_are_located_below_the_grid_step():
    true_q = np.array([1.7231, 2.4412, 3.0069, 4.1537])
    rng = np.random.default_rng(1)
    pattern = synthesize_pattern(_sticks(true_q), XRD_Q_GRID, rng, conditions=protocol_conditions(rng, CLEAN))
    q, height, _, valid = find_peaks(torch.from_numpy(pattern[None].astype(np.float32)), 8)
    found = np.sort(q[0][valid[0] & (height[0] > 0.05)].numpy())
    assert len(found) == len(true_q)
    assert np.abs(found - true_q).max() < 0.3 * (XRD_Q_GRID[1] - XRD_Q_GRID[0])


def test_impurity_adds_a_weak_second_phase():
    main_phase, other = _sticks([2.0, 3.0], [1.0, 0.5]), _sticks([2.5], [4.0])
    mixed = with_impurity(main_phase, other, 0.1)
    assert len(mixed) == 3
    assert mixed.intensity[-1] == pytest.approx(0.1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("xrd_peak")
    sticks = _table().save(folder / "sticks.npz")
    bundle = train_peak_bundle(folder / "bundle", sticks=sticks, splits_dir=folder / "splits", minutes=5, max_steps=6,
                               batch_size=16, n_val=20, eval_every=3, progress=False,
                               architecture={"d_model": 32, "n_layers": 1, "n_peaks": 16})
    return folder, sticks, bundle


def test_trained_bundle_loads_with_both_heads_and_keeps_the_live_format(trained):
    _, _, bundle = trained
    classifier = XrdClassifier.from_bundle(load_bundle(bundle.path))
    rng = np.random.default_rng(2)
    x = np.stack([synthesize_pattern(_table().sticks(i), XRD_Q_GRID, rng) for i in (0, 20)]).astype(np.float32)
    probs = classifier.probabilities(x)
    assert probs.shape == (2, 7) and np.allclose(probs.sum(1), 1)
    sg = classifier.space_group_probabilities(x)
    assert sg.shape == (2, 230) and np.allclose(sg.sum(1), 1)
    prediction = classifier.predict(x[0])
    assert list(prediction) == ["crystal_system"]  # the derived stream reads only this task
    card = bundle.card
    assert card["architecture"]["class"] == "XrdPeakTransformer"
    assert [row["step"] for row in card["training"]["history"]] == [3, 6]


def test_nearest_neighbour_recovers_its_own_reference():
    table = _table(3)
    idx = np.arange(len(table))
    x = protocol_patterns(table, idx, CLEAN, seed=3)
    labels = np.repeat(np.arange(7), 3)
    nn = NearestNeighbourBaseline(x, labels, table.spacegroups.astype(int))
    noisy = protocol_patterns(table, idx, NOISY, seed=4)
    assert (nn.probabilities(noisy).argmax(1) == labels).mean() > 0.8


def test_evaluate_xrd_reports_every_model_on_every_set(trained):
    folder, sticks, bundle = trained
    report = evaluate_xrd([bundle.path], sticks=sticks, splits_dir=folder / "splits", measured=False,
                          timing_frames=2, progress=False)
    assert report["timing"][bundle.id]["frames"] == 2
    assert set(report["sets"]) == {"noisy_formula_disjoint", "clean", "structure_type_disjoint"}
    for by_model in report["sets"].values():
        assert set(by_model) == {bundle.id, "1-NN blurred clean profiles", "majority class"}
        assert "space_group_top5" in by_model[bundle.id]
        mine = by_model[bundle.id]  # intervals over the groups the set is disjoint by, and each group counted once
        assert 1 <= mine["n_groups"] <= mine["n"] and 0.0 <= mine["accuracy_group_mean"] <= 1.0
        assert mine["accuracy_ci95"][0] <= mine["accuracy"] <= mine["accuracy_ci95"][1]
    sets = report["sets"]
    assert sets["clean"][bundle.id]["n_groups"] == sets["noisy_formula_disjoint"][bundle.id]["n_groups"]


def test_cli_evaluate_xrd_rejects_bad_input(tmp_path, capsys):
    assert main(["evaluate", "xrd", "--max-test", "0"]) == 2
    assert main(["evaluate", "xrd", "--sticks", str(tmp_path / "missing.npz")]) == 2
    assert "missing.npz" in capsys.readouterr().err


def test_stick_cache_resumes_and_merges(tmp_path):
    from pymatgen.core import Lattice, Structure

    salt = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    copper = Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.61), ["Cu"], [[0, 0, 0]])
    cache = StickCache(tmp_path / "cache")
    for job in (("mp-salt", "mp", salt.to(fmt="poscar")), ("mp-cu", "mp", copper.to(fmt="poscar"))):
        cache.add(*compute(job))
    cache.flush()
    done = StickCache(tmp_path / "cache").done()  # a new process sees what is done
    assert done["mp-salt"]["crystal_system"] == "cubic" and done["mp-salt"]["spacegroup"] == 225
    assert done["mp-cu"]["reason"] == "single_element"
    merged = StickCache(tmp_path / "cache").merge()
    assert list(merged.ids) == ["mp-salt"]
    q200 = 2 * np.pi / (5.64 / 2)
    assert np.min(np.abs(merged.sticks(0).q - q200)) < 1e-3
    assert json.loads(json.dumps(merged.info))["n_structures"] == 1


def test_extended_splits_keep_committed_ids_and_their_groups(tmp_path):
    table = _table(4)
    ids = [str(k) for k in table.ids]
    committed = {"train": ids[0::3], "val": ids[1::3], "test": ids[2::3]}
    for name, keys in committed.items():
        (tmp_path / f"xrd_{name}.txt").write_text("\n".join(keys[:-1]) + "\n")  # last of each: "new"
    twin = {"id": "new:twin", "formula": str(table.formulas[2]), "spacegroup": int(table.spacegroups[2]),
            "crystal_system": str(table.crystal_systems[2]), "sticks": table.sticks(2)}
    records = [{"id": k, "formula": str(table.formulas[i]), "spacegroup": int(table.spacegroups[i]),
                "crystal_system": str(table.crystal_systems[i]), "sticks": table.sticks(i)} for i, k in enumerate(ids)]
    larger = StickTable.from_records([*records, twin])
    splits = extended_splits(larger, seed=0, committed_dir=tmp_path)
    where = {str(larger.ids[i]): name for name, idx in splits.items() for i in idx}
    for name, keys in committed.items():
        assert all(where[k] == name for k in keys[:-1])
    assert where["new:twin"] == where[ids[2]] == "test"  # same formula + space group: same split
    assert sum(len(v) for v in splits.values()) == len(larger)


def test_generated_crystals_only_ever_train(tmp_path):
    table = _table(4)
    renamed = [f"pyxtal:{k}" if i % 2 else str(k) for i, k in enumerate(table.ids)]
    records = [{"id": key, "formula": str(table.formulas[i]), "spacegroup": int(table.spacegroups[i]),
                "crystal_system": str(table.crystal_systems[i]), "sticks": table.sticks(i)}
               for i, key in enumerate(renamed)]
    mixed = StickTable.from_records(records)
    splits = splits_for(mixed, tmp_path / "splits", seed=0)
    for name in ("val", "test"):
        assert not any(str(mixed.ids[i]).startswith("pyxtal:") for i in splits[name])
        assert "pyxtal:" not in (tmp_path / "splits" / f"xrd_{name}.txt").read_text()
    assert sum(str(k).startswith("pyxtal:") for k in mixed.ids[splits["train"]]) == len(renamed) // 2
