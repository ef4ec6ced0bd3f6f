"""The versioned XANES + PXRD training corpus: structures, FEFF10 spectra, stick patterns, labels.

Layer: above simulation/chemistry/spectra, below training. Structure sources (AMCSD, OmniXAS) are
handed in by the caller, so nothing here reads ../shared or the training layer.
"""

from ._batch import BatchError, export_batch, import_results, read_batch, run_batch, write_batch
from ._build import assemble_from_workdir, build_corpus, default_settings, prepared_materials
from ._calibration import (
    CALIBRATION_CANDIDATES,
    CORPUS_CANDIDATE,
    CalibrationSite,
    calibrate_site,
    calibration_markdown,
    calibration_sites,
    calibration_table,
    choose_settings,
    corpus_settings,
    run_calibration,
)
from ._campaign import (
    DEFAULT_TIMEOUTS,
    CampaignConfig,
    CampaignSummary,
    ResultStore,
    campaign_status,
    pending_items,
    plan_items,
    run_campaign,
)
from ._compare import COMPARE_WINDOW, SpectrumAgreement, aligned_agreement
from ._items import ITEM_KINDS, ITEM_VERSIONS, Item, execute
from ._product import (
    CORPUS_DIR,
    LABEL_PROVENANCE,
    CorpusMissing,
    assemble_corpus,
    content_hash,
    corpus_counts,
    corpus_info,
    read_corpus,
    read_manifest,
    read_splits,
    verify_corpus,
)
from ._sandbox import ItemTimeout, Sandbox, SandboxCrashed
from ._seed import SEED_KIND, SeedError, seed_campaign, seed_records
from ._spectra import (
    IncompleteSpectrum,
    edge_positions,
    energy_offset,
    material_spectrum,
    site_weighted_spectrum,
)
from ._splits import FRACTIONS, SPLITS, assign_splits
from ._structures import (
    CORPUS_METALS,
    CorpusMaterial,
    Rejection,
    SourceEntry,
    deduplicate,
    entry_from_cif,
    metal_site_groups,
    metal_structure,
    missing_atoms_reason,
    prepare_materials,
    reference_materials,
    rejection_tally,
    screen_entries,
    screen_structure,
)
from ._teachers import MAGNETIC_MOMENT_MIN, TeacherLabels, TeacherUnavailable, teacher_labels

from ._calibration import corpus_fallbacks
from ._structures import oxide_structure
from ._calibration import read_rows
from ._calibration import rescore
from ._structures import load_prepared
from ._batch import read_records
from ._build import omnixas_cu_offset

__all__ = [
    "corpus_fallbacks",
    "oxide_structure",
    "read_rows",
    "rescore",
    "load_prepared",
    "read_records",
    "omnixas_cu_offset",
    "BatchError",
    "CALIBRATION_CANDIDATES",
    "COMPARE_WINDOW",
    "CORPUS_CANDIDATE",
    "CORPUS_DIR",
    "CORPUS_METALS",
    "CalibrationSite",
    "CampaignConfig",
    "CampaignSummary",
    "CorpusMaterial",
    "CorpusMissing",
    "DEFAULT_TIMEOUTS",
    "FRACTIONS",
    "ITEM_KINDS",
    "ITEM_VERSIONS",
    "IncompleteSpectrum",
    "Item",
    "ItemTimeout",
    "LABEL_PROVENANCE",
    "MAGNETIC_MOMENT_MIN",
    "Rejection",
    "ResultStore",
    "SEED_KIND",
    "SPLITS",
    "Sandbox",
    "SandboxCrashed",
    "SeedError",
    "SourceEntry",
    "SpectrumAgreement",
    "TeacherLabels",
    "TeacherUnavailable",
    "aligned_agreement",
    "assemble_corpus",
    "assemble_from_workdir",
    "assign_splits",
    "build_corpus",
    "calibrate_site",
    "calibration_markdown",
    "calibration_sites",
    "calibration_table",
    "campaign_status",
    "choose_settings",
    "content_hash",
    "corpus_counts",
    "corpus_info",
    "corpus_settings",
    "deduplicate",
    "default_settings",
    "edge_positions",
    "energy_offset",
    "entry_from_cif",
    "execute",
    "export_batch",
    "import_results",
    "material_spectrum",
    "metal_site_groups",
    "metal_structure",
    "missing_atoms_reason",
    "pending_items",
    "plan_items",
    "prepare_materials",
    "prepared_materials",
    "read_batch",
    "read_corpus",
    "read_manifest",
    "read_splits",
    "reference_materials",
    "rejection_tally",
    "run_batch",
    "run_calibration",
    "run_campaign",
    "screen_entries",
    "screen_structure",
    "seed_campaign",
    "seed_records",
    "site_weighted_spectrum",
    "teacher_labels",
    "verify_corpus",
    "write_batch",
]
