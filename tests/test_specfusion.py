"""SpecFusionNet forward pass: masking, padding and permutation behaviour; input validation."""

import numpy as np
import pytest
import torch

from sfn_stream.core.chemistry import UnknownElementError, descriptor_table
from sfn_stream.core.networks import SpecFusionNet, UnsupportedAbsorberError, encode_compounds

L = 200


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = SpecFusionNet(descriptor_table(), spectrum_length=L, d_model=32, n_heads=4, n_layers=2, cnn_channels=8)
    net.eval()
    return net


def _window(seed):
    rng = np.random.default_rng(seed)
    x = np.linspace(-10, 46, L)
    return (1 / (1 + np.exp(-(x - rng.uniform(0, 8)))) + 0.05 * rng.normal(size=L)).astype(np.float32)


def _run(model, compounds):
    batch = encode_compounds(compounds, spectrum_length=L)
    with torch.no_grad():
        return model(*batch.as_args()), batch


def _same(a, b):
    return torch.allclose(a, b, atol=1e-5)


def test_output_shapes(model):
    out, _ = _run(model, [(["Cu", "O"], {"Cu": (_window(0), 1.0)}, None), (["La", "Cu", "Fe", "O"], {"Cu": (_window(1), 2.0)}, None)])
    assert out["compound_mean"].shape == (2, 1)
    assert out["element_logits"]["oxidation_state"].shape == (2, 4, 8)
    assert out["element_logits"]["coordination_number"].shape == (2, 4, 12)


def test_padding_does_not_change_other_compounds(model):
    small = (["Cu", "O"], {"Cu": (_window(2), 0.5)}, {"Cu": 2, "O": 1})
    large = (["Ba", "Y", "Cu", "O"], {"Cu": (_window(3), 3.0)}, None)
    alone, _ = _run(model, [small])
    batched, batch = _run(model, [small, large])
    assert batch.z.shape[1] == 4  # the small compound was padded with two empty tokens
    assert _same(alone["compound_mean"][0], batched["compound_mean"][0])
    for name, logits in alone["element_logits"].items():
        assert _same(logits[0], batched["element_logits"][name][0, :2])


def test_contents_of_absent_or_padded_slots_are_never_read(model):
    batch = encode_compounds([(["Cu", "Fe", "O"], {"Cu": (_window(4), 1.0)}, None), (["Cu", "O"], {"Cu": (_window(5), 1.0)}, None)], spectrum_length=L)
    with torch.no_grad():
        reference = model(*batch.as_args())
        spectra, shifts = batch.spectra.clone(), batch.e0_shift.clone()
        spectra[~batch.has_spectrum] = float("nan")  # Fe (no spectrum), O, and the padding slot
        shifts[~batch.has_spectrum] = float("nan")
        fractions = batch.fractions.clone()
        fractions[1, 2] = 123.0  # garbage in the padding slot
        poisoned = model(batch.z, fractions, spectra, shifts, batch.has_spectrum)
    assert _same(reference["compound_mean"], poisoned["compound_mean"])
    assert _same(reference["element_logits"]["oxidation_state"][:, :2], poisoned["element_logits"]["oxidation_state"][:, :2])


def test_a_missing_spectrum_changes_the_prediction_but_stays_finite(model):
    with_spectrum, _ = _run(model, [(["Cu", "O"], {"Cu": (_window(6), 1.0)}, None)])
    without, _ = _run(model, [(["Cu", "O"], {}, None)])
    assert torch.isfinite(without["compound_mean"]).all()
    assert not _same(with_spectrum["compound_mean"], without["compound_mean"])


def test_element_order_does_not_matter(model):
    spectra = {"Cu": (_window(7), 2.0)}
    fractions = {"Sr": 0.2, "Cu": 0.2, "Fe": 0.1, "O": 0.5}
    a, _ = _run(model, [(["Sr", "Cu", "Fe", "O"], spectra, fractions)])
    b, _ = _run(model, [(["O", "Fe", "Cu", "Sr"], spectra, fractions)])
    assert _same(a["compound_mean"], b["compound_mean"])
    assert _same(a["compound_log_var"], b["compound_log_var"])
    # per-element outputs follow their element
    assert _same(a["element_logits"]["oxidation_state"][0, 1], b["element_logits"]["oxidation_state"][0, 2])


def test_spectrum_and_e0_shift_both_matter(model):
    w = _window(8)
    base, _ = _run(model, [(["Cu", "O"], {"Cu": (w, 0.0)}, None)])
    shifted, _ = _run(model, [(["Cu", "O"], {"Cu": (w, 5.0)}, None)])
    other, _ = _run(model, [(["Cu", "O"], {"Cu": (_window(9), 0.0)}, None)])
    logits = base["element_logits"]["oxidation_state"][0, 0]
    assert not _same(logits, shifted["element_logits"]["oxidation_state"][0, 0])
    assert not _same(logits, other["element_logits"]["oxidation_state"][0, 0])


def test_input_validation():
    good = _window(10)
    with pytest.raises(UnknownElementError):
        encode_compounds([(["Cu", "Qq"], {"Cu": (good, 0.0)}, None)], spectrum_length=L)
    with pytest.raises(UnsupportedAbsorberError, match="Cu"):
        encode_compounds([(["Fe", "O"], {"Fe": (good, 0.0)}, None)], spectrum_length=L, supported_absorbers=("Cu",))
    with pytest.raises(ValueError, match="200-point"):
        encode_compounds([(["Cu", "O"], {"Cu": (good[:100], 0.0)}, None)], spectrum_length=L)
    with pytest.raises(ValueError, match="not among the elements"):
        encode_compounds([(["Fe", "O"], {"Cu": (good, 0.0)}, None)], spectrum_length=L)
    with pytest.raises(ValueError, match="distinct"):
        encode_compounds([(["Cu", "Cu"], {}, None)], spectrum_length=L)
    with pytest.raises(ValueError, match="NaN"):
        encode_compounds([(["Cu", "O"], {"Cu": (np.full(L, np.nan), 0.0)}, None)], spectrum_length=L)


def test_vectorised_ensemble_matches_member_by_member():
    from sfn_stream.core.networks import StackedEnsemble

    torch.manual_seed(1)
    members = [SpecFusionNet(descriptor_table(), d_model=16, n_heads=2, n_layers=1, cnn_channels=4).eval() for _ in range(3)]
    batch = encode_compounds([(["Cu", "O"], {"Cu": (_window(11), 1.0)}, None), (["Cu", "Fe", "O"], {"Cu": (_window(12), 2.0)}, None)], spectrum_length=L)
    stacked = StackedEnsemble(members)(*batch.as_args())
    with torch.no_grad():
        for k, member in enumerate(members):
            single = member(*batch.as_args())
            assert _same(stacked["compound_mean"][k], single["compound_mean"])
            assert _same(stacked["element_logits"]["oxidation_state"][k], single["element_logits"]["oxidation_state"])


def test_blanked_window_points_are_ignored():
    torch.manual_seed(2)
    net = SpecFusionNet(descriptor_table(), d_model=16, n_heads=2, n_layers=1, cnn_channels=4, blank_below=30).eval()
    a, b = _window(13), _window(13)
    b[:30] += 5.0
    out_a, _ = _run(net, [(["Cu", "O"], {"Cu": (a, 1.0)}, None)])
    out_b, _ = _run(net, [(["Cu", "O"], {"Cu": (b, 1.0)}, None)])
    assert _same(out_a["compound_mean"], out_b["compound_mean"])
    b[30] += 5.0
    out_c, _ = _run(net, [(["Cu", "O"], {"Cu": (b, 1.0)}, None)])
    assert not _same(out_a["compound_mean"], out_c["compound_mean"])


def test_vectorised_ensemble_runs_without_dropout_whatever_the_members_mode():
    from sfn_stream.core.networks import StackedEnsemble

    torch.manual_seed(3)
    members = [SpecFusionNet(descriptor_table(), d_model=16, n_heads=2, n_layers=1, cnn_channels=4, dropout=0.5) for _ in range(2)]
    batch = encode_compounds([(["Cu", "O"], {"Cu": (_window(14), 1.0)}, None)], spectrum_length=L)
    training_mode = StackedEnsemble(members)(*batch.as_args())  # members left in training mode
    evaluated = StackedEnsemble([m.eval() for m in members])(*batch.as_args())
    assert _same(training_mode["compound_mean"], evaluated["compound_mean"])
    assert _same(training_mode["element_logits"]["oxidation_state"], evaluated["element_logits"]["oxidation_state"])


def test_vectorised_ensemble_gives_identical_compounds_identical_results():
    from sfn_stream.core.networks import StackedEnsemble

    torch.manual_seed(4)
    members = [SpecFusionNet(descriptor_table(), d_model=16, n_heads=2, n_layers=1, cnn_channels=4).eval() for _ in range(2)]
    compound = (["Cu", "O"], {"Cu": (_window(15), 1.0)}, None)
    out = StackedEnsemble(members)(*encode_compounds([compound] * 3, spectrum_length=L).as_args())
    assert torch.equal(out["compound_mean"][:, 0], out["compound_mean"][:, 2])
    assert torch.equal(out["element_logits"]["oxidation_state"][:, 0], out["element_logits"]["oxidation_state"][:, 2])
