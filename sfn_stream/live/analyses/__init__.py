"""Per-kind analyses of Bluesky runs (XANES, PXRD) and the registry that names them by kind.

Importing this package registers the analyses it ships; ``base`` says how to add one.
"""

from .base import (
    Analysis,
    BaseAnalysis,
    Insufficient,
    RunContext,
    analysis_for,
    bundle_classes,
    register_analysis,
    registered_analyses,
)
from .samples import SAMPLE_STREAM, MeasuredEdge, SampleFusion, SampleMemory
from .xanes import XANES_ROLES, XANES_STREAM, XanesAnalysis, window_energies, xanes_row
from .xrd import XRD_ROLES, XRD_STREAM, XrdAnalysis, xrd_row
from .convention import RunConvention, default_candidates
from .external import ExternalArrays, ExternalDataError

__all__ = [
    "XANES_ROLES",
    "XANES_STREAM",
    "XRD_ROLES",
    "XRD_STREAM",
    "SAMPLE_STREAM",
    "MeasuredEdge",
    "SampleFusion",
    "SampleMemory",
    "Analysis",
    "BaseAnalysis",
    "ExternalArrays",
    "ExternalDataError",
    "Insufficient",
    "RunContext",
    "RunConvention",
    "XanesAnalysis",
    "XrdAnalysis",
    "analysis_for",
    "bundle_classes",
    "default_candidates",
    "register_analysis",
    "registered_analyses",
    "window_energies",
    "xanes_row",
    "xrd_row",
]
