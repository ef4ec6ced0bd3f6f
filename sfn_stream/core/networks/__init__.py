"""Neural networks and model bundles. Knows nothing of Bluesky or Tiled."""

from ._bundle import (
    CARD_FILE,
    WEIGHTS_FILE,
    BundleError,
    ModelBundle,
    load_bundle,
    models_dir,
    save_bundle,
)
from ._specfusion import (
    COMPOSITION_UNKNOWN,
    ELEMENT_TASK_CLASSES,
    XANES_CARD_KEYS,
    EncodedBatch,
    MultiScaleSpectrumEncoder,
    UNKNOWN_COMPOSITION_FRACTION,
    SpecFusionNet,
    StackedEnsemble,
    UnsupportedAbsorberError,
    XanesEnsemble,
    encode_compounds,
    ensemble_outputs,
)
from ._xrd_ensemble import (
    ENSEMBLE_CLASS,
    XrdEnsemble,
    mix_log_linear,
    xrd_model_from_bundle,
)
from ._xrd_indexed import INDEXED_CLASS, LogisticCombiner, XrdIndexed, combiner_inputs, indexing_features
from ._xrd_net import CRYSTAL_SYSTEMS, XrdClassifier, XrdCnnTransformer, architecture_of
from ._xrd_peaks import N_SPACE_GROUPS, XrdPeakTransformer
from ._xrd_search import ELEMENT_GROUPS, XrdSearchMatch, element_group_vector

__all__ = [
    "CARD_FILE",
    "COMPOSITION_UNKNOWN",
    "CRYSTAL_SYSTEMS",
    "ELEMENT_GROUPS",
    "ELEMENT_TASK_CLASSES",
    "ENSEMBLE_CLASS",
    "INDEXED_CLASS",
    "N_SPACE_GROUPS",
    "WEIGHTS_FILE",
    "XANES_CARD_KEYS",
    "BundleError",
    "EncodedBatch",
    "ModelBundle",
    "MultiScaleSpectrumEncoder",
    "SpecFusionNet",
    "StackedEnsemble",
    "UNKNOWN_COMPOSITION_FRACTION",
    "UnsupportedAbsorberError",
    "XanesEnsemble",
    "XrdClassifier",
    "XrdCnnTransformer",
    "XrdEnsemble",
    "XrdIndexed",
    "LogisticCombiner",
    "combiner_inputs",
    "indexing_features",
    "XrdPeakTransformer",
    "XrdSearchMatch",
    "architecture_of",
    "element_group_vector",
    "encode_compounds",
    "ensemble_outputs",
    "load_bundle",
    "mix_log_linear",
    "models_dir",
    "save_bundle",
    "xrd_model_from_bundle",
]
