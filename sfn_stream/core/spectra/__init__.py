"""Preprocessing of measured and computed spectra (no Bluesky, no torch).

XANES: tabulated K edges, file readers and the Athena/Larch-style normalisation onto the
model window (``preprocess_xanes``).
"""

from ._edges import (
    K_EDGE_ENERGIES,
    TRANSITION_METALS_3D,
    UnknownEdgeError,
    edge_energy,
    element_symbol,
    k_edge_energy,
)
from ._athena import is_athena_project, read_athena
from ._powder import CU_K_ALPHA1, PowderFile, read_powder_file
from ._files import (
    MAX_INPUT_BYTES,
    MAX_INPUT_BYTES_VARIABLE,
    InputTooLargeError,
    SpectrumFile,
    SpectrumFileError,
    check_input_size,
    max_input_bytes,
)
from ._readers import (
    absorber_from_filename,
    find_absorber,
    preprocess_xanes_file,
    read_spectrum,
    read_xy,
    xanes_channels,
)
from ._xanes import (
    E0_METHOD,
    XANES_DEFAULTS,
    XANES_FLAGS,
    XANES_WINDOW,
    NormalizationDefaults,
    WindowDefinition,
    XanesInputError,
    XanesWindow,
    absorber_from_scan,
    find_e0,
    find_first_inflection,
    preprocess_xanes,
)
from ._pdcif import PdCifError, PdCifProfile, parse_cif_blocks, read_pdcif
from ._xrd import (
    XRD_Q_GRID,
    XrdInputError,
    XrdPattern,
    finish_on_grid,
    preprocess_xrd,
    rebin_to_grid,
    snip_background,
    two_theta_to_q,
)
from ._xrd import BACKGROUND
from ._xrd_indexing import N_FEATURES as N_INDEXING_FEATURES
from ._xrd_indexing import (TOLERANCE_Q, CellFit, IndexingEvidence, cell_edges, conventional_cell,
                            family_edges, index_pattern, lattice_lines, metric_forms, noise_sigma,
                            peak_positions)
from ._xrd import XRD_Q_MIN
from ._xrd import XRD_Q_POINTS
from ._xrd import XRD_Q_STEP
