"""Building training sets from ../shared and training the model bundles in ``models/``."""

from sfn_stream.offline.shared import SharedDataMissing

from ._amcsd import AmcsdEntry, amcsd_ids, iter_amcsd_structures
from ._corpus_sources import CORPUS_SOURCES, corpus_sources
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
from ._xrd import (
    DEFAULT_STICK_TABLE,
    assign_splits,
    build_stick_table,
    evaluate_measured,
    labels_of,
    measured_dev_set,
    read_split_files,
    synthesize_set,
    train_xrd_bundle,
)

__all__ = [
    "CORPUS_SOURCES",
    "DEFAULT_STICK_TABLE",
    "LABELS_FILE",
    "AmcsdEntry",
    "Augmentation",
    "MaterialSpectrum",
    "SharedDataMissing",
    "TrainConfig",
    "TrainingDataError",
    "XanesDataset",
    "XanesSample",
    "amcsd_ids",
    "assign_splits",
    "build_stick_table",
    "build_xanes_dataset",
    "compute_omnixas_labels",
    "corpus_sources",
    "evaluate_measured",
    "evaluate_measured_dev",
    "evaluate_split",
    "iter_amcsd_structures",
    "labels_of",
    "material_spectrum",
    "measure_feff_energy_offset",
    "measured_dev_set",
    "read_omnixas_labels",
    "read_split_files",
    "read_splits",
    "recorded_energy_offset",
    "synthesize_set",
    "train_xanes_bundle",
    "train_xrd_bundle",
    "window_sample",
    "write_splits",
]
