
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
from sfn_stream.offline.shared import SharedDataMissing
from ._xrd import (
    assign_splits,
    build_stick_table,
    classification_metrics,
    evaluate_measured,
    measured_dev_set,
    train_xrd_bundle,
)

from ._structure_benchmark import BENCHMARK_FILE
from ._structure_benchmark import load_benchmark
from ._structure_benchmark import run_benchmark
from ._structure_benchmark import run_measured
from ._xanes import evaluate_split
from ._xrd import DEFAULT_STICK_TABLE
from ._xrd import labels_of
from ._xrd import read_split_files
from ._xrd import repo_dir
from ._xrd import synthesize_set

__all__ = [
    "BENCHMARK_FILE",
    "load_benchmark",
    "run_benchmark",
    "run_measured",
    "evaluate_split",
    "DEFAULT_STICK_TABLE",
    "labels_of",
    "read_split_files",
    "repo_dir",
    "synthesize_set",
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
