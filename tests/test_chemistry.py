"""Element descriptors and structure-derived labels on small, well-known structures."""

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from sfn_stream.core.chemistry import (
    DESCRIPTOR_NAMES,
    UnknownElementError,
    absorber_labels,
    coordination_numbers,
    crystal_system,
    descriptor_stats,
    descriptor_table,
    element_descriptors,
    element_type,
    equivalent_sites,
    is_transition_metal,
    nearest_class,
    oxidation_states,
    space_group,
    structure_labels,
)


@pytest.fixture(scope="module")
def rutile():
    # TiO2, P4_2/mnm, a = 4.594, c = 2.959 A, O at x = 0.3048 (Baur 1961)
    x = 0.3048
    return Structure(
        Lattice.tetragonal(4.594, 2.959),
        ["Ti", "Ti", "O", "O", "O", "O"],
        [[0, 0, 0], [0.5, 0.5, 0.5], [x, x, 0], [1 - x, 1 - x, 0], [0.5 + x, 0.5 - x, 0.5], [0.5 - x, 0.5 + x, 0.5]],
    )


@pytest.fixture(scope="module")
def cuprite():
    # Cu2O, Pn-3m, a = 4.2696 A: O on a bcc lattice, Cu linearly between them
    return Structure(
        Lattice.cubic(4.2696),
        ["O", "O", "Cu", "Cu", "Cu", "Cu"],
        [[0, 0, 0], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25], [0.75, 0.75, 0.25], [0.75, 0.25, 0.75], [0.25, 0.75, 0.75]],
    )


@pytest.fixture(scope="module")
def hematite():
    # Fe2O3, R-3c (hexagonal axes) a = 5.0356, c = 13.7489 A, Fe 12c z = 0.3553, O 18e x = 0.3059
    return Structure.from_spacegroup(
        "R-3c", Lattice.hexagonal(5.0356, 13.7489), ["Fe", "O"], [[0, 0, 0.3553], [0.3059, 0, 0.25]]
    )


@pytest.fixture(scope="module")
def magnetite():
    # Fe3O4 spinel, Fd-3m origin choice 1: Fe(tet) 8a, Fe(oct) 16d, O 32e x = 0.3799
    return Structure.from_spacegroup(
        "Fd-3m", Lattice.cubic(8.396), ["Fe", "Fe", "O"], [[0, 0, 0], [5 / 8, 5 / 8, 5 / 8], [0.3799] * 3]
    )


def test_descriptor_vector_layout_and_standardisation():
    table = descriptor_table()
    assert table.shape == (95, len(DESCRIPTOR_NAMES))
    assert not table[0].any()  # row 0 is padding
    z_column = DESCRIPTOR_NAMES.index("Z")
    stats = descriptor_stats()["Z"]
    assert table[29, z_column] == pytest.approx((29 - stats["mean"]) / stats["std"], rel=1e-6)
    # continuous columns are standardised over H..Pu (missing values sit at 0 = the mean)
    assert abs(table[1:, z_column].mean()) < 1e-5
    one_hot = [i for i, name in enumerate(DESCRIPTOR_NAMES) if name.startswith("type_")]
    assert np.all(table[1:, one_hot].sum(1) == 1)


def test_missing_values_are_flagged_not_hidden():
    h = dict(zip(DESCRIPTOR_NAMES, element_descriptors("H")))
    assert h["ionization_energy_2_missing"] == 1 and h["ionization_energy_3_missing"] == 1
    assert h["ionization_energy_2"] == 0 and h["ionization_energy_3"] == 0
    he = dict(zip(DESCRIPTOR_NAMES, element_descriptors("He")))
    assert he["electronegativity_missing"] == 1 and he["ionization_energy_3_missing"] == 1
    assert he["ionization_energy_2_missing"] == 0
    cu = dict(zip(DESCRIPTOR_NAMES, element_descriptors("Cu")))
    assert not any(cu[name] for name in DESCRIPTOR_NAMES if name.endswith("_missing"))


def test_element_types():
    assert element_type("Cu") == "transition_metal" and is_transition_metal("Cu")
    assert element_type("La") == "lanthanide" and not is_transition_metal("La")
    assert element_type("O") == "nonmetal" and element_type("Cl") == "halogen"
    assert element_type("Li") == "alkali" and element_type("Ba") == "alkaline_earth"
    assert element_type("Si") == "metalloid" and element_type("Bi") == "post_transition_metal"


@pytest.mark.parametrize("bad", ["Xx", "", "cu2", "Og"])
def test_unknown_elements_raise(bad):
    with pytest.raises(UnknownElementError):
        element_descriptors(bad)


def test_rutile(rutile):
    labels = structure_labels(rutile, ["Ti"])
    ti = labels.absorbers["Ti"]
    assert (ti.oxidation_state_class, ti.oxidation_method, ti.cn_class) == (4, "bvanalyzer", 6)
    assert labels.crystal_system == "tetragonal" and labels.space_group_number == 136
    assert labels.density == pytest.approx(4.25, abs=0.03)


def test_cuprite(cuprite):
    labels = structure_labels(cuprite, ["Cu"])
    cu = labels.absorbers["Cu"]
    assert (cu.oxidation_state_class, cu.cn_class, cu.n_sites) == (1, 2, 4)
    assert crystal_system(cuprite) == "cubic" and space_group(cuprite) == ("Pn-3m", 224)
    assert labels.formula == "Cu2O"


def test_hematite(hematite):
    labels = structure_labels(hematite, ["Fe"])
    fe = labels.absorbers["Fe"]
    assert (fe.oxidation_state_class, fe.oxidation_state_mean, fe.cn_class) == (3, 3.0, 6)
    assert labels.crystal_system == "trigonal" and labels.space_group_number == 167
    assert not fe.cn_mixed


def test_multiplicity_weighting_on_mixed_site_magnetite(magnetite):
    groups = equivalent_sites(magnetite, "Fe")
    assert sorted(len(g) for g in groups) == [8, 16]
    fe = absorber_labels(magnetite, "Fe")
    # 8 Fe3+ (CN 4) + 16 Fe2.5+ (CN 6): mean 8/3 and CN (8*4 + 16*6) / 24
    assert fe.oxidation_state_mean == pytest.approx(8 / 3)
    assert fe.oxidation_state_class == 3
    assert fe.cn_mean == pytest.approx(16 / 3) and fe.cn_class == 5
    assert fe.cn_mixed and sorted(fe.site_cns) == [4, 6]
    assert coordination_numbers(magnetite, [groups[0][0], groups[0][1]]) == [fe.site_cns[0]] * 2


def test_oxidation_fallbacks_are_recorded():
    # Cu at a body centre of Cl: BVAnalyzer finds no valences, the composition guess gives Cu2+.
    odd = Structure(Lattice.cubic(3.0), ["Cu", "Cl", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0]])
    result = oxidation_states(odd)
    assert result.method == "oxi_state_guesses" and result.states[0] == 2.0
    assert "BVAnalyzer" in result.reason
    brass = Structure(Lattice.cubic(2.95), ["Cu", "Zn"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert oxidation_states(brass).method == "all_metal_zero"
    assert oxidation_states(brass).states == (0.0, 0.0)


def test_nearest_class_rounds_half_up():
    assert [nearest_class(v) for v in (1.49, 1.5, 2.5, 2.67, 0.0)] == [1, 2, 3, 3, 0]
