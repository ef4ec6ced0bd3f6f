
"""Building training sets from ../shared and training the model bundles in ``models/``."""

from ._omnixas import (
    LABELS_FILE,
    MaterialSpectrum,
    SiteCoverageError,
    average_site_spectra,
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
    expected_calibration_error,
    measure_feff_energy_offset,
    read_splits,
    recorded_energy_offset,
    split_by_formula,
    train_xanes_bundle,
    window_sample,
    write_splits,
)
from ._amcsd import AmcsdEntry, amcsd_ids, iter_amcsd_structures
from ._shared import SharedDataMissing
from ._xrd import (
    assign_splits,
    build_stick_table,
    classification_metrics,
    evaluate_measured,
    measured_dev_set,
    train_xrd_bundle,
)

__all__ = [
    "AmcsdEntry",
    "amcsd_ids",
    "iter_amcsd_structures",
    "assign_splits",
    "build_stick_table",
    "classification_metrics",
    "evaluate_measured",
    "measured_dev_set",
    "train_xrd_bundle",
    "LABELS_FILE",
    "Augmentation",
    "MaterialSpectrum",
    "SharedDataMissing",
    "SiteCoverageError",
    "TrainConfig",
    "TrainingDataError",
    "XanesDataset",
    "XanesSample",
    "average_site_spectra",
    "build_xanes_dataset",
    "compute_omnixas_labels",
    "evaluate_measured_dev",
    "expected_calibration_error",
    "material_spectrum",
    "measure_feff_energy_offset",
    "read_omnixas_labels",
    "read_splits",
    "recorded_energy_offset",
    "split_by_formula",
    "train_xanes_bundle",
    "window_sample",
    "write_splits",
]
