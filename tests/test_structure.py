"""Structure inference on small template sets built here: rutile, the paper's Ca-Mn-Al-O example,
empty answers, malformed requests, the index cache, and the reflection calculator against pymatgen."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from sfn_stream.core.structure import (
    InferenceRequest,
    StructureInputError,
    StructureSource,
    TemplateIndex,
    XrdInput,
    enumerate_formulas,
    formula_prior,
    infer_structures,
    reflections,
    source_index,
)
from sfn_stream.core.structure import _index as index_module
from sfn_stream.core.structure._infer import SUBSTITUTION_WEIGHT

# One lab measurement (Cu K-alpha1+2), fixed so that the tests are deterministic.
LAB = dict(
    source="lab", wavelength=1.54059, wavelength2=1.54443, q_range=(0.75, 5.9), instrument_fwhm_deg=0.08,
    crystallite_size_A=800.0, microstrain=0.0005, eta=0.4, zero_shift_deg=0.03, displacement_mm=0.0,
    lattice_strain=0.004, debye_waller_B=0.5, per_peak_log_sigma=0.1, march_dollase_r=None,
    background_fraction=0.2, peak_counts=3e4, gaussian_noise=0.002,
)


def rutile(a=4.594, c=2.959, cation="Ti"):
    return Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(a, c), [cation, "O"], [[0, 0, 0], [0.3053, 0.3053, 0]])


def anatase():
    return Structure.from_spacegroup("I4_1/amd", Lattice.tetragonal(3.785, 9.514), ["Ti", "O"],
                                     [[0, 0.75, 0.125], [0, 0.75, 0.3333]])


def fluorite():
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.07), ["Zr", "O"], [[0, 0, 0], [0.25, 0.25, 0.25]])


def brownmillerite(a_site="Sr", octahedral="Fe", tetrahedral="Ga", abc=(5.43, 14.77, 5.60)):
    """Ca2Fe2O5-type (Pnma) with the octahedral and tetrahedral B sites ordered: A2(B)(B')O5."""
    return Structure.from_spacegroup(
        "Pnma", Lattice.orthorhombic(*abc), [a_site, octahedral, tetrahedral, "O", "O", "O"],
        [[0.0234, 0.1083, 0.4786], [0, 0, 0], [0.0658, 0.25, 0.9299], [0.2627, 0.9835, 0.2377],
         [0.0276, 0.1416, 0.0251], [0.8719, 0.25, 0.6157]],
    )


def ordered_spinel(a_site="Mg", b1="Fe", b2="Al", a=8.08):
    """MgAl2O4 spinel with the B sites ordered in layers: A(B)(B')O4 (P-4m2)."""
    spinel = Structure.from_spacegroup("Fd-3m", Lattice.cubic(a), [a_site, b2, "O"],
                                       [[0, 0, 0], [0.625, 0.625, 0.625], [0.3875, 0.3875, 0.3875]])
    for i, site in enumerate(spinel):
        if site.specie.symbol == b2 and site.frac_coords[2] % 1 < 0.5 - 1e-6:
            spinel.replace(i, b1)
    return spinel


def measured(structure, seed=0):
    """Counts vs 2theta of ``structure`` as the project's simulator measures it (lab conditions above)."""
    from sfn_stream.core.simulation import q_to_two_theta, stick_pattern, synthesize_pattern
    from sfn_stream.core.spectra import XRD_Q_GRID

    details = synthesize_pattern(stick_pattern(structure), XRD_Q_GRID, np.random.default_rng(seed),
                                 conditions=dict(LAB), return_details=True)
    covered = details["covered"]
    return XrdInput(q_to_two_theta(XRD_Q_GRID[covered], LAB["wavelength"]), details["raw"][covered], "2theta",
                    LAB["wavelength"])


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("structure-cache")


def oxide_source():
    """Rutile-type SnO2 (not TiO2: rutile must come from substitution), anatase, fluorite ZrO2, and
    the two Ca-Mn-Al-O structure types with other elements (Sr2FeGaO5, MgFeAlO4)."""
    return StructureSource("test-oxides", {
        "SnO2-rutile": rutile(4.737, 3.186, "Sn"), "TiO2-anatase": anatase(), "ZrO2-fluorite": fluorite(),
        "Sr2FeGaO5-brownmillerite": brownmillerite(), "MgFeAlO4-spinel": ordered_spinel(),
    })


@pytest.fixture(scope="module")
def oxide_templates(cache):
    return source_index(oxide_source(), directory=cache)


def test_rutile_from_ti4_cn6_tetragonal_ranks_rutile_first(oxide_templates):
    request = InferenceRequest(elements=("Ti", "O"), xrd=measured(rutile()), oxidation_states={"Ti": {4: 1.0}},
                               coordination={"Ti": {6: 1.0}}, crystal_systems={"tetragonal": 1.0})
    result = infer_structures(request, index=oxide_templates)
    best = result.best
    assert best is not None, result.reason
    assert (best.formula, best.spacegroup_symbol) == ("TiO2", "P4_2/mnm")
    assert best.template_id == "test-oxides:SnO2-rutile" and best.substitution["pairs"] == {"Sn": "Ti", "O": "O"}
    # the fitted cell is rutile's (the template's SnO2 cell is 3-8 % larger)
    a, _, c = best.structure.lattice.abc
    assert a == pytest.approx(4.594 * 1.004, rel=0.01) and c == pytest.approx(2.959 * 1.004, rel=0.01)
    assert best.components["xrd_similarity"] > result.candidates[1].components["xrd_similarity"] + 0.1
    assert "anatase" in result.candidates[1].template_id.lower()
    assert {"xrd_similarity", "formula_prior", "crystal_system_prior", "cn_probability",
            "substitution_probability"} <= set(best.components)
    json.dumps(result.to_dict())  # serialisable, CIFs included
    assert "_symmetry_space_group_name_H-M" in best.to_cif()


def polar_rutile(dz=0.05):
    """Rutile-type SnO2 with every O moved 0.16 A along c: P4_2nm (102), a pattern nearly rutile's own."""
    structure = rutile(4.737, 3.186, "Sn")
    structure.translate_sites([i for i, site in enumerate(structure) if site.specie.symbol == "O"], [0, 0, dz])
    return structure


@pytest.fixture(scope="module")
def rutile_twins(cache):
    return source_index(StructureSource("rutile-twins", {"SnO2-rutile": rutile(4.737, 3.186, "Sn"),
                                                         "SnO2-polar": polar_rutile()}), directory=cache)


def _ranked(index, space_groups):
    request = InferenceRequest(elements=("Ti", "O"), xrd=measured(rutile()), oxidation_states={"Ti": {4: 1.0}},
                               crystal_systems={"tetragonal": 1.0}, space_group_probabilities=space_groups)
    return infer_structures(request, index=index).candidates


def test_space_group_prior_ranks_the_named_space_group_first_and_is_absent_without_a_table(rutile_twins):
    """Two templates whose patterns agree to 1e-4 (rutile, 136, and its polar twin, 102) on a measured
    rutile pattern: the space-group table decides, in the direction it names (equal base rates: the gain is
    the probability ratio); without a table the score is the sum of the other terms, as before the prior existed."""
    assert {e.spacegroup_number for e in rutile_twins.entries} == {136, 102}
    plain = _ranked(rutile_twins, None)
    assert abs(plain[0].components["xrd_similarity"] - plain[1].components["xrd_similarity"]) < 2e-3
    for c in plain:
        assert "space_group_log_prior" not in c.components
        parts = c.components
        assert c.score == pytest.approx(
            parts["xrd_term"] + math.log(parts["formula_prior"]) + math.log(parts["crystal_system_prior"])
            + math.log(parts["cn_probability"]) + SUBSTITUTION_WEIGHT * parts["substitution_log_prior"]
            + parts["formula_size_log_prior"])
    for named, other in ((136, 102), (102, 136)):
        ranked = _ranked(rutile_twins, {named: 0.6, other: 0.2, 62: 0.1})
        assert [c.spacegroup_number for c in ranked] == [named, other]
        gain = ranked[0].components["space_group_log_prior"] - ranked[1].components["space_group_log_prior"]
        assert gain == pytest.approx(math.log(0.6 / 0.2))  # both above the floor: their probability ratio
        before = {c.spacegroup_number: c.score for c in plain}
        assert ranked[0].score - ranked[1].score == pytest.approx(before[named] - before[other] + gain, abs=1e-6)


def test_space_group_prior_floors_a_missed_space_group_and_ignores_unnamed_systems(rutile_twins):
    from sfn_stream.core.structure import SPACE_GROUP_FLOOR, space_group_base_rates

    missed = _ranked(rutile_twins, {102: 0.9})  # a top 5 that misses rutile: lowered, not excluded
    assert [c.spacegroup_number for c in missed] == [102, 136]
    base = space_group_base_rates(e.spacegroup_number for e in rutile_twins.entries)
    assert base[136] == base[102] == pytest.approx(2 / 70)  # 68 tetragonal groups, one template each of two
    # rutile counts as the floor's share of its base rate, against all the tetragonal mass
    assert missed[1].components["space_group_log_prior"] == pytest.approx(
        math.log(SPACE_GROUP_FLOOR / (0.9 + SPACE_GROUP_FLOOR * (1 - base[102]))))
    elsewhere = _ranked(rutile_twins, {225: 0.7, 62: 0.2})  # names no tetragonal group: nothing changes
    plain = _ranked(rutile_twins, None)
    assert [c.spacegroup_number for c in elsewhere] == [c.spacegroup_number for c in plain]
    assert [c.score for c in elsewhere] == pytest.approx([c.score for c in plain], abs=1e-9)
    assert [c.components["space_group_log_prior"] for c in elsewhere] == pytest.approx([0, 0], abs=1e-9)


def test_paper_example_enumerates_both_formulas():
    states = {"Ca": {2: 1.0}, "Mn": {3: 1.0}, "Al": {3: 1.0}, "O": {-2: 1.0}}
    formulas = [f.reduced_formula for f in enumerate_formulas(["Ca", "Mn", "Al", "O"], states)]
    assert "CaMnAlO4" in formulas and "Ca2MnAlO5" in formulas
    assert "CaMnAlO5" not in formulas  # 2 + 3 + 3 - 10 != 0
    assert formula_prior([("Ca", 1), ("Mn", 1), ("Al", 1), ("O", 5)], states) is None


@pytest.mark.parametrize("truth, expected", [
    (lambda: brownmillerite("Ca", "Mn", "Al", (5.33, 15.05, 5.46)), ("Ca2MnAlO5", "orthorhombic")),
    (lambda: ordered_spinel("Ca", "Mn", "Al", 8.35), ("CaMnAlO4", "tetragonal")),
])
def test_paper_example_pattern_picks_the_right_formula(oxide_templates, truth, expected):
    request = InferenceRequest(elements=("Ca", "Mn", "Al", "O"), xrd=measured(truth(), seed=2),
                               oxidation_states={"Mn": {3: 1.0}})  # crystal system unknown: all seven
    result = infer_structures(request, index=oxide_templates)
    assert {f["formula"] for f in result.formulas} >= {"Ca2MnAlO5", "CaMnAlO4"}
    assert (result.best.formula, result.best.crystal_system) == expected
    others = [c for c in result.candidates if c.formula != expected[0]]
    assert others and result.best.score > others[0].score


def test_no_template_gives_an_empty_result_with_a_reason(oxide_templates):
    request = InferenceRequest(elements=("Ti", "O"), xrd=measured(rutile()), oxidation_states={"Ti": {4: 1.0}},
                               crystal_systems={"hexagonal": 1.0})
    result = infer_structures(request, index=oxide_templates)
    assert result.candidates == [] and "hexagonal" in result.reason and "template" in result.reason
    request = InferenceRequest(elements=("Li", "F"), xrd=measured(rutile()))
    result = infer_structures(request, index=oxide_templates)
    assert result.candidates == [] and "Li-F" in result.reason
    flat = XrdInput(np.linspace(10, 90, 500), np.full(500, 100.0), "2theta", 1.5406)
    result = infer_structures(InferenceRequest(("Ti", "O"), flat), index=oxide_templates)
    assert result.candidates == [] and "not usable" in result.reason


@pytest.mark.parametrize("kwargs, message", [
    (dict(elements=("Ti", "Xx")), "not an element"),
    (dict(elements=("Ti",)), "2 to 5 elements"),
    (dict(elements=("Li", "Na", "K", "Rb", "Cs", "F")), "2 to 5 elements"),
    (dict(elements=("Ti", "Ti")), "distinct"),
    (dict(elements=("Ti", "O"), oxidation_states={"Ti": {4: 1.0}, "O": {2: 1.0}}), "no charge-balanced"),
    (dict(elements=("Ti", "O"), oxidation_states={"Ti": {4: -1.0}}), ">= 0"),
    (dict(elements=("Ti", "O"), oxidation_states={"Fe": {3: 1.0}}), "not among the elements"),
    (dict(elements=("Ti", "O"), crystal_systems={"cubicc": 1.0}), "unknown crystal system"),
    (dict(elements=("Ti", "O"), coordination={"Ti": {"six": 1.0}}), "coordination numbers of Ti"),
    (dict(elements=("Ti", "O"), space_group_probabilities={231: 0.5}), "between 1 and 230"),
])
def test_malformed_requests_raise_clear_errors(oxide_templates, kwargs, message):
    request = InferenceRequest(xrd=measured(rutile()), **kwargs)
    with pytest.raises(StructureInputError, match=message):
        infer_structures(request, index=oxide_templates)


def test_bad_xrd_call_is_an_input_error(oxide_templates):
    request = InferenceRequest(("Ti", "O"), XrdInput(np.arange(100.0), np.ones(100), "2theta", None))
    with pytest.raises(ValueError, match="wavelength"):
        infer_structures(request, index=oxide_templates)


def test_index_round_trips_from_its_cache(oxide_templates, cache, monkeypatch):
    index_module._MEMO.clear()

    def no_build(*args, **kwargs):
        raise AssertionError("the index should come from the cache file")

    monkeypatch.setattr(index_module, "build_index", no_build)
    again = source_index(oxide_source(), directory=cache)
    assert again.info["path"] == oxide_templates.info["path"]
    assert isinstance(TemplateIndex.load(again.info["path"]), TemplateIndex)
    assert [e.to_dict() for e in again.entries] == [e.to_dict() for e in oxide_templates.entries]
    for i in range(len(again)):
        assert again.structure(i).matches(oxide_templates.structure(i))
    rutile_entry = next(e for e in again.entries if e.template_id.endswith("SnO2-rutile"))
    assert (rutile_entry.anonymous, rutile_entry.crystal_system, rutile_entry.spacegroup_number) == ("1-2", "tetragonal", 136)
    assert rutile_entry.oxidation == (4.0, -2.0) and rutile_entry.cn[0] == ((6, 2),)
    assert again.lookup("1-2", "tetragonal") and not again.lookup("1-2", "hexagonal")


def test_reflections_agree_with_pymatgen_xrdcalculator():
    from pymatgen.analysis.diffraction.xrd import XRDCalculator

    from sfn_stream.core.structure._pattern import lorentz_polarization

    structure = brownmillerite()
    refl = reflections(structure, "orthorhombic", q_max=5.0)
    q = refl.q()
    intensity = refl.f2 * lorentz_polarization(q, 1.5406)
    pattern = XRDCalculator(1.5406).get_pattern(structure, scaled=False, two_theta_range=(5, 75))
    peak_q = 4 * np.pi * np.sin(np.radians(np.asarray(pattern.x) / 2)) / 1.5406
    # every pymatgen peak is the sum of our reflections at its position
    for pq, py in zip(peak_q, pattern.y):
        near = np.abs(q - pq) < 2e-4
        if py > 1e-3 * max(pattern.y):
            assert intensity[near].sum() == pytest.approx(py, rel=0.02)


def test_benchmark_runs_held_out_queries_in_parallel_with_the_same_records(oxide_templates):
    """The benchmark runner on a two-item benchmark: the held-out item is removed from the templates,
    hits are scored, and 2 worker processes give the records of 1, in query order."""
    from sfn_stream.offline.evaluation.structure_benchmark import run_benchmark

    def item(template_id, formula, system, anonymous, oxidation, cn):
        return {"id": f"test-oxides:{template_id}", "origin": "test", "split": "dev", "n_elements": 2,
                "formula": formula, "crystal_system": system, "anonymous": anonymous, "spacegroup_number": 0,
                "oxidation": oxidation, "cn": cn, "duplicates": []}

    benchmark = {"items": [
        item("ZrO2-fluorite", "ZrO2", "cubic", "1-2", {"Zr": 4, "O": -2}, {}),  # no other cubic AB2: a miss
        item("TiO2-anatase", "TiO2", "tetragonal", "1-2", {"Ti": 4, "O": -2}, {"Ti": 6}),  # rutile-SnO2 remains
    ]}
    serial = run_benchmark(benchmark, settings=("true",), split="dev", index=oxide_templates)
    parallel = run_benchmark(benchmark, settings=("true",), split="dev", index=oxide_templates, workers=2)
    assert [r["id"] for r in serial["records"]] == ["test-oxides:ZrO2-fluorite", "test-oxides:TiO2-anatase"]
    assert [(r["top1"], r["template_type_available"]) for r in serial["records"]] == [(False, False), (True, True)]
    assert "test-oxides:TiO2-anatase" not in [p[4] for p in serial["records"][1]["predicted"]]  # held out
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(parallel["records"]) == strip(serial["records"])
    assert serial["summary"]["true"]["2"] == {**serial["summary"]["true"]["2"], "n": 2, "top1": 0.5}


def test_benchmark_runs_each_query_with_and_without_the_space_group_prior(oxide_templates):
    """Space-group priors side by side: 'none' records are those of a run without priors; 'predicted' holds the
    search-match bundle's top 5 for the query's own simulated pattern; 'oracle' the true space group."""
    from sfn_stream.offline.evaluation.structure_benchmark import run_benchmark

    item = {"id": "test-oxides:TiO2-anatase", "origin": "test", "split": "dev", "n_elements": 2, "formula": "TiO2",
            "crystal_system": "tetragonal", "anonymous": "1-2", "spacegroup_number": 141,
            "oxidation": {"Ti": 4, "O": -2}, "cn": {"Ti": 6}, "duplicates": []}
    run = run_benchmark({"items": [item]}, settings=("true",), split="dev", index=oxide_templates,
                        space_group_priors=("none", "predicted", "oracle"))
    plain, predicted, oracle = run["records"]
    assert "space_group_prior" not in plain and (predicted["space_group_prior"], oracle["space_group_prior"]) == (
        "predicted", "oracle")
    assert len(predicted["space_group_table"]) == 5 and all(1 <= n <= 230 for n in predicted["space_group_table"])
    assert oracle["space_group_table"] == {141: 1.0} and oracle["true_space_group_in_table"]
    assert set(run["summary"]) == {"true", "true+sg_predicted", "true+sg_oracle"}
    assert run["summary"]["true+sg_oracle"]["2"]["true_space_group_in_table"] == 1.0


def test_relax_refits_the_best_candidate_after_chgnet(oxide_templates):
    """--relax 1: the best candidate is relaxed with CHGNet (real model), its pattern refitted; the score moves
    by the change in similarity and every number of the relaxation travels with the candidate."""
    pytest.importorskip("chgnet")
    request = InferenceRequest(elements=("Ti", "O"), xrd=measured(rutile()), oxidation_states={"Ti": {4: 1.0}},
                               coordination={"Ti": {6: 1.0}}, crystal_systems={"tetragonal": 1.0})
    plain = infer_structures(request, index=oxide_templates)
    relaxed = infer_structures(request, index=oxide_templates, relax=1)
    best, before = relaxed.best, plain.best
    assert (best.formula, best.spacegroup_symbol) == ("TiO2", "P4_2/mnm")
    assert best.fit["relaxed"] and best.fit["relax_steps"] >= 1 and "relax" in relaxed.seconds
    assert best.components["xrd_similarity_unrelaxed"] == pytest.approx(before.components["xrd_similarity"])
    assert best.score - before.score == pytest.approx(
        (best.components["xrd_similarity"] - before.components["xrd_similarity"]) / 0.02, abs=1e-6)
    assert -12 < best.components["chgnet_energy_per_atom"] < -6  # rutile: about -9 eV/atom
    a, _, c = best.structure.lattice.abc  # refitted to the measured cell after relaxation
    assert a == pytest.approx(4.594 * 1.004, rel=0.01) and c == pytest.approx(2.959 * 1.004, rel=0.01)
    assert not relaxed.candidates[1].fit.get("relaxed")
    # the probabilities follow the scores after relaxation (softmax with the unrelaxed others)
    first, second = relaxed.candidates[:2]
    assert math.log(first.probability / second.probability) == pytest.approx(first.score - second.score, abs=1e-6)
    assert best.score != pytest.approx(before.score, abs=1e-4)
    json.dumps(relaxed.to_dict())
