"""Extension of the PXRD stick table with further sources (matminer_mp, disordered AMCSD) and its splits."""

import json

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from sfn_stream.core.simulation import StickTable
from sfn_stream.offline.shared import have_shared
from sfn_stream.offline.training._xrd import (
    DEFAULT_STICK_TABLE,
    EXTENSION_SOURCES,
    extend_split_files,
    extend_stick_table,
    read_split_files,
    structure_record,
    with_generated,
)


def rock_salt(a=5.64, cation="Na", anion="Cl"):
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), [cation, anion], [[0, 0, 0], [0.5, 0.5, 0.5]])


def record(key, structure):
    out, reason = structure_record(key, structure)
    assert reason is None
    return out


def test_structure_record_rejects_a_duplicate_before_its_sticks():
    out, reason = structure_record("x", rock_salt(), duplicate_of=lambda f, sg: "amcsd:1" if (f, sg) == ("NaCl", 225) else None)
    assert out is None and reason == "duplicate: amcsd:1"
    out, reason = structure_record("y", rock_salt(cation="K"), duplicate_of=lambda f, sg: None)
    assert reason is None and out["formula"] == "KCl" and out["spacegroup"] == 225


def test_extend_split_files_keeps_committed_and_follows_formulas(tmp_path):
    pairs = [("Na", "Cl"), ("K", "Cl"), ("Rb", "Cl"), ("Na", "Br")]
    base = [record(f"b{k}", rock_salt(5.0 + 0.1 * k, c, a)) for k, (c, a) in enumerate(pairs)]
    committed = tmp_path / "committed"
    committed.mkdir()
    # NaCl in train and test, KCl in test only, RbCl in val only, NaBr in train only
    (committed / "xrd_train.txt").write_text("b0\nb3\nb9\n")  # b9: a committed id the table lacks (ignored)
    (committed / "xrd_val.txt").write_text("b2\n")
    (committed / "xrd_test.txt").write_text("b1\n")
    cscl = Structure(Lattice.cubic(4.1), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])  # NaCl in Pm-3m: new group
    extra = [record("n0", cscl), record("n1", Structure(Lattice.cubic(4.2), ["K", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])),
             record("n2", Structure(Lattice.cubic(4.3), ["Rb", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])),
             record("n3", Structure(Lattice.cubic(4.4), ["Na", "Br"], [[0, 0, 0], [0.5, 0.5, 0.5]]))]
    extra += [record(f"m{k}", rock_salt(5.5, c, a)) for k, (c, a) in enumerate(
        [(c, a) for c in ("Li", "Cs", "Ag", "Tl") for a in ("F", "I")])]
    extra.append(record("m8", Structure(Lattice.cubic(4.0), ["Li", "F"], [[0, 0, 0], [0.5, 0.5, 0.5]])))  # LiF twice
    table = StickTable.from_records(base + extra)
    split_of = {}
    splits = extend_split_files(table, committed, tmp_path / "out")
    for name, idx in splits.items():
        split_of.update({str(table.ids[i]): name for i in idx})
    assert sum(len(v) for v in splits.values()) == len(table)
    assert (split_of["b0"], split_of["b1"], split_of["b2"], split_of["b3"]) == ("train", "test", "val", "train")
    assert (split_of["n0"], split_of["n1"], split_of["n2"], split_of["n3"]) == ("train", "test", "val", "train")
    assert split_of["m0"] == split_of["m8"]  # one new formula (LiF), two space groups: one split
    again = read_split_files(table, tmp_path / "out")
    assert {k: list(v) for k, v in again.items()} == {k: list(v) for k, v in splits.items()}
    # the shared assignment wins for a new structure that is a corpus material, with its formula's other new
    # structures; a committed structure keeps its split whatever the shared file says
    for split in ("test", "val"):
        other = {name: {str(table.ids[i]) for i in idx} for name, idx in
                 extend_split_files(table, committed, shared={"m0": split, "b0": "test"}).items()}
        assert {"m0", "m8"} <= other[split] and "b0" in other["train"]


@pytest.mark.skipif(not have_shared(), reason="needs ../shared (matminer_mp)")
@pytest.mark.skipif(not DEFAULT_STICK_TABLE.is_file(), reason="no committed stick table")
def test_extend_stick_table_with_matminer_mp_and_disordered_amcsd(tmp_path):
    from sfn_stream.offline.shared import matminer_mp_materials

    committed = StickTable.load(DEFAULT_STICK_TABLE)
    keep = [0, 1, 2]
    records = [{"id": str(committed.ids[i]), "formula": str(committed.formulas[i]),
                "spacegroup": int(committed.spacegroups[i]), "crystal_system": str(committed.crystal_systems[i]),
                "sticks": committed.sticks(i)} for i in keep]
    # an entry with the formula and space group of the first matminer_mp structure: that one is a duplicate
    first_id, first = min(matminer_mp_materials().items())
    structure = Structure.from_str(first["poscar"], fmt="poscar")
    group = (structure.composition.reduced_formula, SpacegroupAnalyzer(structure, symprec=0.1).get_space_group_number())
    records.append({**records[0], "id": "twin", "formula": group[0], "spacegroup": group[1]})
    base = tmp_path / "base.npz"
    StickTable.from_records(records, {"sources": ["amcsd", "mp"], "n_structures": 4, "timeout_s": 20}).save(base)

    out = tmp_path / "ext" / "sticks.npz"
    table = extend_stick_table(out, base=base, limit=3, progress=False)
    assert list(table.ids[:4]) == [r["id"] for r in records]
    np.testing.assert_array_equal(table.sticks(1).q, committed.sticks(1).q)
    info = table.info
    assert info["complete"] and info["sources"] == ["amcsd", "mp", *EXTENSION_SOURCES]
    assert info["extension"]["sources"] == list(EXTENSION_SOURCES) and info["timeout_s"] == 20
    added = info["extension"]["n_added"]
    assert added["matminer_mp"] == 2 and 1 <= added["amcsd_disordered"] <= 3
    assert len(table) == 4 + sum(added.values()) == info["n_structures"]
    sidecar = json.loads(out.with_suffix(".rejected.json").read_text())
    assert sidecar["rejected_by_extension"][first_id] == "matminer_mp: duplicate: twin"
    assert all(k.startswith("amcsd:") for k in sidecar["added_by_source"]["amcsd_disordered"])
    assert set(sidecar["added_by_source"]["matminer_mp"]) <= set(matminer_mp_materials())
    # every group (formula, space group) once
    groups = list(zip(table.formulas[4:], table.spacegroups[4:]))
    assert len(set(groups)) == len(groups)
    assert not set(groups) & {(r["formula"], r["spacegroup"]) for r in records}
    with pytest.raises(ValueError, match="unknown extension sources"):
        extend_stick_table(tmp_path / "x.npz", base=base, sources=("pyxtal",))


def test_the_pxrd_splits_follow_the_shared_assignment_formula_by_formula(tmp_path):
    from sfn_stream.offline.training import shared_split_files

    cscl = Structure(Lattice.cubic(4.1), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    table = StickTable.from_records([
        record("mp-1", rock_salt()),  # a corpus test material the PXRD split had in train
        record("amcsd:7", cscl),  # NaCl in another space group, not in the corpus: follows the formula to test
        record("mp-2", rock_salt(6.29, "K", "Cl")),  # corpus train, PXRD test before
        record("amcsd:8", rock_salt(6.6, "Rb", "Cl")),  # no corpus formula: keeps its committed split
        record("amcsd:9", rock_salt(4.0, "Li", "F")),  # the corpus holds LiF (as a material the table lacks) in val
    ])
    committed = tmp_path / "splits"
    committed.mkdir()
    (committed / "xrd_train.txt").write_text("mp-1\namcsd:7\namcsd:9\n")
    (committed / "xrd_val.txt").write_text("amcsd:8\n")
    (committed / "xrd_test.txt").write_text("mp-2\n")
    shared = {"mp-1": "test", "mp-2": "train", "mp-99": "val"}
    splits = shared_split_files(table, shared, committed, tmp_path / "out", shared_formulas={"LiF": "val"})
    split_of = {str(table.ids[i]): name for name, idx in splits.items() for i in idx}
    assert split_of == {"mp-1": "test", "amcsd:7": "test", "mp-2": "train", "amcsd:8": "val", "amcsd:9": "val"}
    assert (tmp_path / "out" / "xrd_test.txt").read_text().split() == ["amcsd:7", "mp-1"]


def test_generated_crystals_join_training_only_and_never_a_held_out_formula():
    real = StickTable.from_records([record("amcsd:1", rock_salt()), record("amcsd:2", rock_salt(cation="K")),
                                    record("amcsd:3", rock_salt(cation="Rb"))])
    splits = {"train": np.array([0]), "val": np.array([1]), "test": np.array([2])}
    generated = StickTable.from_records([record("pyxtal:cubic:0", rock_salt(a=6.0, cation="Cs")),
                                         record("pyxtal:cubic:1", rock_salt(a=6.3, cation="Rb"))])
    combined, out = with_generated(real, generated, splits)
    # RbCl is a test formula: its generated crystal is left out, CsCl joins the training split
    assert list(combined.ids) == ["amcsd:1", "amcsd:2", "amcsd:3", "pyxtal:cubic:0"]
    assert combined.ids[out["train"]].tolist() == ["amcsd:1", "pyxtal:cubic:0"]
    assert out["val"].tolist() == [1] and out["test"].tolist() == [2]
    assert combined.info["generated"]["dropped_formula_in_val_or_test"] == 1
    assert np.allclose(combined.sticks(3).q, generated.sticks(0).q)
    with pytest.raises(ValueError, match="pyxtal:"):
        with_generated(real, StickTable.from_records([record("mp-9", rock_salt(cation="Cs"))]), splits)
