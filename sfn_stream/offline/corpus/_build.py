"""`dataset build` as a library call: prepared structures -> campaign -> corpus folder."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from sfn_stream.core.simulation import FeffSettings
from ._campaign import CampaignConfig, CampaignSummary, run_campaign
from ._product import CORPUS_DIR, assemble_corpus
from ._structures import (
    CorpusMaterial,
    Rejection,
    SourceEntry,
    load_prepared,
    prepare_materials,
    reference_materials,
    save_prepared,
)

log = logging.getLogger(__name__)

PREPARED = "materials.json.gz"


def prepared_materials(
    workdir: str | Path,
    entries: Callable[[], Iterable[SourceEntry]],
    sources: dict[str, str],
    refresh: bool = False,
    progress: bool = True,
) -> tuple[list[CorpusMaterial], list[Rejection], dict[str, str]]:
    """Screened and deduplicated structures, computed once per workdir (``refresh`` redoes it)."""
    path = Path(workdir) / PREPARED
    if path.is_file() and not refresh:
        return load_prepared(path)
    materials, rejections = prepare_materials(entries(), progress=progress)
    save_prepared(path, materials, rejections, sources)
    return materials, rejections, sources


OMNIXAS_CU_OFFSET_FILE = CORPUS_DIR / "omnixas_cu_metal.json"


def omnixas_cu_offset(path: str | Path = OMNIXAS_CU_OFFSET_FILE) -> float | None:
    """The committed energy offset of FEFF fcc Cu at the OmniXAS settings (first inflection point, as
    :func:`sfn_stream.offline.corpus.energy_offset`), if it has been measured."""
    import json

    path = Path(path)
    return float(json.loads(path.read_text())["energy_offset"]) if path.is_file() else None


def assemble_from_workdir(config: CampaignConfig, out_dir: str | Path = CORPUS_DIR) -> dict[str, Any]:
    """Write the corpus folder from what the campaign in ``config.workdir`` has finished so far."""
    materials, rejections, sources = load_prepared(Path(config.workdir) / PREPARED)
    return assemble_corpus(materials, reference_materials(config.metals), rejections, config.store.records(),
                           config.settings, out_dir, sources=sources, metals=config.metals,
                           omnixas_cu_offset=omnixas_cu_offset())


def build_corpus(
    config: CampaignConfig,
    entries: Callable[[], Iterable[SourceEntry]],
    sources: dict[str, str],
    out_dir: str | Path = CORPUS_DIR,
    *,
    scheduler: str | None = None,
    n_workers: int = 1,
    max_items: int | None = None,
    assemble_every: float | None = None,
    refresh_structures: bool = False,
    progress: bool = True,
) -> tuple[CampaignSummary, dict[str, Any]]:
    """Prepare structures (cached), run the campaign (resumable), write the corpus.

    ``assemble_every`` (s) rewrites the corpus folder during a long campaign, so that its progress
    can be committed in parts while it runs.
    """
    materials, _, _ = prepared_materials(config.workdir, entries, sources, refresh_structures, progress)
    references = reference_materials(config.metals)
    last = [time.monotonic()]

    def maybe_assemble(record: dict) -> None:
        if assemble_every and time.monotonic() - last[0] > assemble_every:
            last[0] = time.monotonic()
            try:
                manifest = assemble_from_workdir(config, out_dir)
                log.info("corpus written: %d materials, hash %s", manifest["n_materials"],
                         manifest["content_hash"][:12])
            except Exception as err:  # a failed snapshot must not stop the campaign
                log.warning("could not write the corpus snapshot: %s", err)

    summary = run_campaign(materials, references, config, scheduler=scheduler, n_workers=n_workers,
                           progress=progress, max_items=max_items, on_record=maybe_assemble)
    return summary, assemble_from_workdir(config, out_dir)


def default_settings() -> FeffSettings:
    from ._calibration import corpus_settings

    return corpus_settings()
