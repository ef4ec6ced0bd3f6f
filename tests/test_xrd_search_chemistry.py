"""Search-match with the sample's elements: the chemistry term of the ranking score, its bundle fields, and the
paths that pass elements (predictor, live PXRD analysis, CLI)."""

from __future__ import annotations

import numpy as np
import pytest
from test_xrd_search_match import bundle, table  # noqa: F401 (module fixtures: the small bundle, the stick table)

from sfn_stream.core.chemistry import CRYSTAL_SYSTEMS
from sfn_stream.core.networks import (
    XrdSearchMatch,
    element_group_vector,
    xrd_model_from_bundle,
)
from sfn_stream.core.predict import ModelRegistry, XrdPredictor
from sfn_stream.core.spectra import XRD_Q_GRID, XrdInputError, two_theta_to_q
from sfn_stream.offline.training import DEFAULT_STICK_TABLE, formula_elements

TWO_THETA = np.arange(10.0, 90.0, 0.02)


def _profile(peaks_q, heights=None, width=0.01) -> np.ndarray:
    heights = np.ones(len(peaks_q)) if heights is None else np.asarray(heights, float)
    y = sum(h * np.exp(-0.5 * ((XRD_Q_GRID - q) / width) ** 2) for q, h in zip(peaks_q, heights))
    return (y / y.max()).astype(np.float32)


def _library(chemistry=True):
    """Two near-twin references: B (NaCl, tetragonal) matches the query's pattern a little better than
    A (MnO, cubic); C (LiF, triclinic) looks like neither."""
    query_peaks = [2.00, 2.40, 3.10, 3.60]
    references = np.stack([
        _profile([2.00, 2.40, 3.10, 3.62]),   # A: cubic, Mn O
        _profile([2.00, 2.40, 3.10, 3.60], [1.0, 1.0, 1.0, 0.9]),  # B: tetragonal, Na Cl
        _profile([1.50, 2.80, 4.00, 4.50]),   # C: triclinic, Li F
    ])
    labels = [CRYSTAL_SYSTEMS.index(c) for c in ("cubic", "tetragonal", "triclinic")]
    kwargs = {"blur_points": 2.0, "subsample": 3, "dilations": [0.0], "k": 2, "temperature": 0.01, "prior_share": 0.0}
    if chemistry:
        kwargs.update(reference_elements=[["Mn", "O"], "Cl Na", ["F", "Li"]],
                      chemistry={"weight": 0.1, "k": 2, "temperature": 0.01, "prior_share": 0.0})
    searcher = XrdSearchMatch.from_profiles(references, labels, [225, 123, 1], **kwargs)
    return searcher, _profile(query_peaks)[None, :]


def test_elements_move_the_reference_of_the_sample_chemistry_ahead():
    searcher, query = _library()
    indices, _ = searcher.nearest(query)
    assert indices[0, 0] == 1  # by pattern alone: B (NaCl) first
    assert CRYSTAL_SYSTEMS[int(searcher.probabilities(query)[0].argmax())] == "tetragonal"
    indices, scores = searcher.nearest(query, elements=["Mn", "O"])
    assert indices[0, 0] == 0  # a Mn-O sample: A first
    assert CRYSTAL_SYSTEMS[int(searcher.probabilities(query, elements=["Mn", "O"])[0].argmax())] == "cubic"
    # an element set of B's chemistry keeps B first; the term only adds: scores >= pattern similarities
    assert searcher.nearest(query, elements=["Na", "Cl"])[0][0, 0] == 1
    assert (scores[0] >= searcher.similarities(query)[0, indices[0]] - 1e-6).all()
    # a space group follows the same neighbours
    assert searcher.predict(query[0], elements=["Mn", "O"])["space_group"]["classes"][0] == "225"


def test_without_elements_the_prediction_is_the_chemistry_free_one():
    with_chemistry, query = _library(chemistry=True)
    without, _ = _library(chemistry=False)
    assert with_chemistry.has_chemistry and not without.has_chemistry
    np.testing.assert_array_equal(with_chemistry.probabilities(query), without.probabilities(query))
    assert with_chemistry.predict(query[0]) == without.predict(query[0])
    with pytest.raises(XrdInputError, match="no reference element sets"):
        without.probabilities(query, elements=["Mn", "O"])


@pytest.mark.parametrize("bad", [["Mn", "Xx"], [], "MnO"])
def test_bad_elements_are_refused(bad):
    searcher, query = _library()
    with pytest.raises(XrdInputError):
        searcher.probabilities(query, elements=bad)


def test_only_the_element_set_is_used():
    assert formula_elements("Fe(SbS2)2") == ["Fe", "S", "Sb"]
    np.testing.assert_array_equal(element_group_vector(["Fe", "O"]), element_group_vector(["O", "Fe", "Fe"]))
    # two 3d oxides look alike, an alkali halide does not
    assert element_group_vector(["Mn", "O"]) @ element_group_vector(["Fe", "O"]) == pytest.approx(1.0)
    assert element_group_vector(["Mn", "O"]) @ element_group_vector(["Na", "Cl"]) == pytest.approx(0.0)


needs_table = pytest.mark.skipif(not DEFAULT_STICK_TABLE.is_file(), reason="no committed stick table")



def _scan(table, structure, rng):
    q = two_theta_to_q(TWO_THETA, 1.5406)
    sticks = table.sticks(structure)
    y = 50 + sum(1e4 * h * np.exp(-0.5 * ((q - c) / 0.006) ** 2) for c, h in zip(sticks.q, sticks.intensity))
    return rng.poisson(y).astype(float)


@needs_table
def test_the_bundle_stores_element_sets_and_the_fitted_weight(bundle, table):
    chemistry = bundle.card["calibration"]["chemistry"]
    assert chemistry["weight"] in chemistry["grid"]["weight"]
    assert set(chemistry["nll_by_weight"]) == {str(w) for w in chemistry["grid"]["weight"]}
    assert "val_noisy_protocol_with_elements" in bundle.card["metrics"]
    searcher = xrd_model_from_bundle(bundle)
    assert searcher.has_chemistry and searcher.chemistry["weight"] == chemistry["weight"]
    position = {key: i for i, key in enumerate(table.ids)}
    first = position[searcher.reference_ids[0]]
    assert searcher.reference_elements[0] == " ".join(formula_elements(table.formulas[first]))


@needs_table
def test_the_predictor_passes_elements_and_records_them(bundle, table):
    predictor = XrdPredictor(bundle.path)
    assert predictor.uses_elements
    structure = list(table.ids).index(xrd_model_from_bundle(bundle).reference_ids[0])
    scan = _scan(table, structure, np.random.default_rng(0))
    plain, _ = predictor.predict_pattern(TWO_THETA, scan, wavelength=1.5406)
    given, _ = predictor.predict_pattern(TWO_THETA, scan, wavelength=1.5406, elements="Fe2O3")
    assert plain.inputs == {} and given.inputs == {"elements": ["Fe", "O"]}
    assert given.status == plain.status == "ok"
    again, _ = predictor.predict_pattern(TWO_THETA, scan, wavelength=1.5406)
    assert again.properties["crystal_system"].probabilities == plain.properties["crystal_system"].probabilities


@needs_table
@pytest.mark.parametrize("composition, elements, flag", [("Fe2O3", ["Fe", "O"], False), (None, None, False),
                                                         ("Xx2O", None, True)])
def test_the_live_analysis_takes_the_sample_elements_from_the_start_document(bundle, table, tmp_path,
                                                                             composition, elements, flag):
    from sfn_stream.live.analyses.base import RunContext
    from sfn_stream.live.analyses.convention import RunMetadata
    from sfn_stream.live.analyses.xrd import XrdAnalysis

    (tmp_path / "xrd-search-match").symlink_to(bundle.path)
    metadata = RunMetadata({"kind": "xrd", "wavelength": 1.5406, **({"composition": composition} if composition else {})})
    rows = []
    analysis = XrdAnalysis(RunContext(start={"uid": "u"}, metadata=metadata, models=ModelRegistry(tmp_path),
                                      write_row=lambda stream, row: rows.append(row), find_keys=lambda *a: {}))
    structure = list(table.ids).index(xrd_model_from_bundle(bundle).reference_ids[0])
    analysis.add_event({"pattern": _scan(table, structure, np.random.default_rng(1)), "x": TWO_THETA}, 1)
    assert len(rows) == 1
    assert analysis._last.inputs.get("elements") == elements
    assert ("composition_invalid" in analysis._last.quality_flags) == flag


@needs_table
def test_predict_xrd_takes_elements_on_the_command_line(table, tmp_path, capsys):
    import json

    from sfn_stream.cli import main
    from sfn_stream.core.predict import default_registry

    path = tmp_path / "scan.xy"
    np.savetxt(path, np.column_stack([TWO_THETA, _scan(table, 0, np.random.default_rng(2))]))
    assert main(["predict", "xrd", str(path), "--elements", "Pb,S", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["status"] in ("ok", "flagged")
    used = default_registry().predictor("xrd").uses_elements  # the shipped bundle's choice
    assert result.get("inputs") == ({"elements": ["Pb", "S"]} if used else None)
    assert main(["predict", "xrd", str(path), "--elements", "Pb,Xx"]) == 2
    assert "--elements" in capsys.readouterr().err
