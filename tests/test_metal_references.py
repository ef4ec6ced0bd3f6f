"""The nine 3d metals as training spectra: labels are the pure elements' facts, the committed corpus holds
their FEFF10 spectra, and the 3d training reader hands them over as training-only materials."""

from __future__ import annotations

import numpy as np
import pytest

from sfn_stream.core import paths
from sfn_stream.offline.corpus._metal_references import first_shell_cn
from sfn_stream.offline.corpus._structures import metal_structure


@pytest.mark.parametrize(("element", "cn"), [("Fe", 8), ("V", 8), ("Cu", 12), ("Ni", 12), ("Zn", 12), ("Ti", 12),
                                             ("Mn", None)])
def test_first_shell_cn_of_bcc_fcc_hcp_and_none_for_alpha_mn(element, cn):
    assert first_shell_cn(metal_structure(element)) == cn


@pytest.mark.skipif(not (paths.CORPUS_DIR / "metal_references.parquet").is_file(), reason="no metal references")
def test_the_reader_gives_every_metal_as_a_usable_training_only_foil():
    from sfn_stream.offline.training._corpus_xanes import REFERENCE, read_metal_references
    from sfn_stream.offline.training._xanes3d import material_views
    from sfn_stream.offline.training._xanes_splits import split_of
    from sfn_stream.offline.training import read_unified_splits

    foils = read_metal_references()
    assert sorted(m.elements[0] for m in foils) == sorted(["Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn"])
    assigned = split_of(read_unified_splits())
    for foil in foils:
        metal = foil.elements[0]
        assert foil.source == REFERENCE and foil.material_id not in assigned
        assert foil.metal_labels[metal]["oxidation_state"] == 0 and foil.labels["is_metal"] is True
        views = material_views(foil, None, np.random.default_rng(0))
        assert np.isfinite(views[metal].windows).all()
