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
    ELEMENT_TASK_CLASSES,
    XANES_CARD_KEYS,
    EncodedBatch,
    MultiScaleSpectrumEncoder,
    SpecFusionNet,
    StackedEnsemble,
    UnsupportedAbsorberError,
    XanesEnsemble,
    encode_compounds,
    ensemble_outputs,
)
from ._xrd_net import CRYSTAL_SYSTEMS, XrdClassifier, XrdCnnTransformer, architecture_of
from ._xrd_peaks import N_SPACE_GROUPS, XrdPeakTransformer
from ._xrd_search import ELEMENT_GROUPS, XrdSearchMatch, element_group_vector, xrd_model_from_bundle

__all__ = [
    "EncodedBatch",
    "architecture_of",
    "CRYSTAL_SYSTEMS",
    "XrdClassifier",
    "XrdSearchMatch",
    "ELEMENT_GROUPS",
    "element_group_vector",
    "xrd_model_from_bundle",
    "XrdCnnTransformer",
    "XrdPeakTransformer",
    "N_SPACE_GROUPS",
    "BundleError",
    "CARD_FILE",
    "WEIGHTS_FILE",
    "ELEMENT_TASK_CLASSES",
    "ModelBundle",
    "MultiScaleSpectrumEncoder",
    "SpecFusionNet",
    "StackedEnsemble",
    "UnsupportedAbsorberError",
    "XANES_CARD_KEYS",
    "XanesEnsemble",
    "encode_compounds",
    "ensemble_outputs",
    "load_bundle",
    "models_dir",
    "save_bundle",
]
