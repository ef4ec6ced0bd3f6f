"""Building training sets from ../shared and training the model bundles in ``models/``."""

from sfn_stream.offline.shared import SharedDataMissing

from ._amcsd import AmcsdEntry, amcsd_ids, iter_amcsd_structures
from ._corpus_sources import CORPUS_SOURCES, corpus_sources
from ._corpus_xanes import (
    MATERIAL_CLASSIFICATIONS,
    MATERIAL_REGRESSIONS,
    METALS_3D,
    CorpusMaterial,
    EdgeSpectrum,
    read_corpus_materials,
)
from ._omnixas import (
    LABELS_FILE,
    MaterialSpectrum,
    compute_omnixas_labels,
    material_spectrum,
    read_omnixas_labels,
)
from ._xanes import (
    Augmentation,
    TrainConfig,
    TrainingDataError,
    XanesDataset,
    XanesSample,
    build_xanes_dataset,
    evaluate_measured_dev,
    evaluate_split,
    measure_feff_energy_offset,
    read_splits,
    recorded_energy_offset,
    train_xanes_bundle,
    window_sample,
    write_splits,
)
from ._xanes3d import BUNDLE_NAME as XANES_3D_BUNDLE
from ._xanes3d import (
    Augmentation3d,
    Train3dConfig,
    combine_xanes3d_bundles,
    edge_window,
    load_training_materials,
    train_xanes3d_bundle,
)
from ._xanes_splits import (
    UNIFIED_SPLITS_FILE,
    make_unified_splits,
    read_unified_splits,
    split_of,
    write_unified_splits,
)
from ._xrd import (
    DEFAULT_STICK_TABLE,
    assign_splits,
    build_stick_table,
    evaluate_measured,
    labels_of,
    measured_dev_set,
    read_split_files,
    shared_split_files,
    sync_xrd_splits,
    synthesize_set,
    train_xrd_bundle,
)
from ._xrd_ensemble import build_xrd_ensemble_bundle
from ._xrd_indexed import build_xrd_indexed_bundle
from ._xrd_search_match import BUNDLE_NAME as XRD_SEARCH_MATCH_BUNDLE
from ._xrd_search_match import build_search_match_bundle, formula_elements

__all__ = [
    "CORPUS_SOURCES",
    "DEFAULT_STICK_TABLE",
    "LABELS_FILE",
    "MATERIAL_CLASSIFICATIONS",
    "MATERIAL_REGRESSIONS",
    "METALS_3D",
    "UNIFIED_SPLITS_FILE",
    "XANES_3D_BUNDLE",
    "XRD_SEARCH_MATCH_BUNDLE",
    "AmcsdEntry",
    "Augmentation",
    "Augmentation3d",
    "CorpusMaterial",
    "EdgeSpectrum",
    "MaterialSpectrum",
    "SharedDataMissing",
    "Train3dConfig",
    "TrainConfig",
    "TrainingDataError",
    "XanesDataset",
    "XanesSample",
    "amcsd_ids",
    "assign_splits",
    "build_search_match_bundle",
    "build_stick_table",
    "build_xanes_dataset",
    "build_xrd_ensemble_bundle",
    "build_xrd_indexed_bundle",
    "combine_xanes3d_bundles",
    "compute_omnixas_labels",
    "corpus_sources",
    "edge_window",
    "evaluate_measured",
    "evaluate_measured_dev",
    "evaluate_split",
    "formula_elements",
    "iter_amcsd_structures",
    "labels_of",
    "load_training_materials",
    "make_unified_splits",
    "material_spectrum",
    "measure_feff_energy_offset",
    "measured_dev_set",
    "read_corpus_materials",
    "read_omnixas_labels",
    "read_split_files",
    "read_splits",
    "read_unified_splits",
    "recorded_energy_offset",
    "shared_split_files",
    "split_of",
    "sync_xrd_splits",
    "synthesize_set",
    "train_xanes3d_bundle",
    "train_xanes_bundle",
    "train_xrd_bundle",
    "window_sample",
    "write_splits",
    "write_unified_splits",
]
