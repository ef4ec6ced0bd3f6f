"""Structure inference from spectra-derived constraints (formulas, templates, substitution, ranking).

``infer_structures(InferenceRequest(...))`` enumerates charge-balanced formulas, retrieves templates of
the same anonymous formula and crystal system from cached indices of the template sources,
substitutes the elements, fits each candidate's simulated PXRD to the measured pattern and
returns the ranked candidates with named score components.
"""

from sfn_stream.core.chemistry import CRYSTAL_SYSTEMS  # re-exported: requests name crystal systems

from ._formulas import MIXED_VALENCE_PRIOR, Formula, charge_options, enumerate_formulas, formula_prior
from ._index import (
    TemplateEntry,
    TemplateIndex,
    anonymous_key,
    build_index,
    cache_dir,
    describe_template,
    source_index,
    template_index,
)
from ._infer import Candidate, InferenceResult, infer_structures
from ._pattern import PatternFit, Reflections, measured_profile, reflections
from ._relax import RelaxationUnavailable, relax_structure
from ._request import (
    InferenceRequest,
    ResolvedRequest,
    StructureInputError,
    XrdInput,
    default_oxidation_states,
    parse_assignments,
    resolve_request,
)
from ._sources import (
    DEFAULT_SOURCES,
    AflowSource,
    AmcsdSource,
    CifFolderSource,
    MaterialsProjectSource,
    RawTemplate,
    RobocrysSource,
    SourceUnavailable,
    StructureSource,
    TemplateSource,
    make_source,
)
from ._space_group import SPACE_GROUP_FLOOR, crystal_system_of, space_group_base_rates, space_group_log_priors
from ._substitute import ElementMapping, element_mappings, ionic_radius, substituted_structure
from .amcsd import AmcsdEntry, amcsd_ids, iter_amcsd_structures

__all__ = [
    "CRYSTAL_SYSTEMS",
    "DEFAULT_SOURCES",
    "MIXED_VALENCE_PRIOR",
    "SPACE_GROUP_FLOOR",
    "AflowSource",
    "AmcsdEntry",
    "AmcsdSource",
    "Candidate",
    "CifFolderSource",
    "ElementMapping",
    "Formula",
    "InferenceRequest",
    "InferenceResult",
    "MaterialsProjectSource",
    "PatternFit",
    "RawTemplate",
    "Reflections",
    "RelaxationUnavailable",
    "ResolvedRequest",
    "RobocrysSource",
    "SourceUnavailable",
    "StructureInputError",
    "StructureSource",
    "TemplateEntry",
    "TemplateIndex",
    "TemplateSource",
    "XrdInput",
    "amcsd_ids",
    "anonymous_key",
    "build_index",
    "cache_dir",
    "charge_options",
    "crystal_system_of",
    "default_oxidation_states",
    "describe_template",
    "element_mappings",
    "enumerate_formulas",
    "formula_prior",
    "infer_structures",
    "ionic_radius",
    "iter_amcsd_structures",
    "make_source",
    "measured_profile",
    "parse_assignments",
    "reflections",
    "relax_structure",
    "resolve_request",
    "source_index",
    "space_group_base_rates",
    "space_group_log_priors",
    "substituted_structure",
    "template_index",
]
