"""`dataset build` as a library call: prepared structures -> campaign -> corpus folder."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

from sfn_stream.core.simulation import FeffSettings

from ._audit import AUDIT_DIR, AUDIT_TABLE
from ._calibration import corpus_settings, omnixas_cu_offset
from ._campaign import (
    CampaignConfig,
    CampaignSummary,
    label_classes,
    seeded_materials,
    run_campaign,
    save_order_classes,
)
from ._product import CORPUS_DIR, MANIFEST, assemble_corpus
from ._seed import SeedError, seed_campaign
from ._structures import (
    CorpusMaterial,
    Rejection,
    SourceEntry,
    load_prepared,
    prepare_materials,
    reference_materials,
    save_prepared,
)

logger = logging.getLogger(__name__)

PREPARED = "materials.json.gz"


class CampaignMissing(FileNotFoundError):
    """The work folder holds no prepared campaign."""


class SnapshotMissing(SeedError):
    """The folder to seed a campaign from holds no corpus."""


def campaign_materials(config: CampaignConfig) -> list[CorpusMaterial]:
    """The prepared materials of the campaign in ``config.workdir``."""
    path = Path(config.workdir) / PREPARED
    if not path.is_file():
        raise CampaignMissing(f"no campaign in {config.workdir}: run `sfn-stream dataset build` first")
    materials, _, _ = load_prepared(path)
    return materials


def seed_from_snapshot(config: CampaignConfig, seed_from: str | Path | None, out_dir: str | Path,
                       log: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """Take the FEFF spectra and failures of the corpus ``seed_from`` (else ``out_dir``, when it holds one)
    as done in the campaign's store; None when there is nothing to seed from."""
    source = Path(seed_from or out_dir)
    if not (source / MANIFEST).is_file():
        if seed_from is not None:
            raise SnapshotMissing(f"{seed_from}: no corpus there (no {MANIFEST})")
        return None
    seeded = seed_campaign(config.store, source, config.settings.key())
    if (seeded["spectra"] or seeded["failures"]) and log is not None:
        log(f"seeded from {source}: {seeded['spectra']} material spectra and {seeded['failures']} "
            f"failed items taken as done ({seeded['already_present']} were here already)")
    return seeded


Entries = Callable[[], Iterable[SourceEntry]]


def prepared_materials(
    workdir: str | Path,
    entries: Entries | Mapping[str, Entries],
    sources: dict[str, str],
    refresh: bool = False,
    progress: bool = True,
) -> tuple[list[CorpusMaterial], list[Rejection], dict[str, str]]:
    """Screened and deduplicated structures, computed once per workdir (``refresh`` redoes it).

    ``entries``: one callable for all sources, or one per source name; with the latter, a source that
    ``sources`` names and the prepared campaign lacks is screened and added to it (its duplicates of the
    campaign's materials dropped), so that the materials there keep their ids and finished items.
    """
    path = Path(workdir) / PREPARED
    if path.is_file() and not refresh:
        materials, rejections, prepared = load_prepared(path)
        added = {name: text for name, text in sources.items() if name not in prepared}
        if not added or not isinstance(entries, Mapping):
            return materials, rejections, prepared
        new = chain.from_iterable(entries[name]() for name in added)
        materials, more = prepare_materials(new, progress=progress, existing=materials)
        rejections, prepared = rejections + more, {**prepared, **added}
        save_prepared(path, materials, rejections, prepared)
        return materials, rejections, prepared
    every = (chain.from_iterable(entries[name]() for name in entries) if isinstance(entries, Mapping)
             else entries())
    materials, rejections = prepare_materials(every, progress=progress)
    save_prepared(path, materials, rejections, sources)
    return materials, rejections, sources


def assemble_from_workdir(config: CampaignConfig, out_dir: str | Path = CORPUS_DIR) -> dict[str, Any]:
    """Write the corpus folder from what the campaign in ``config.workdir`` has finished so far."""
    materials, rejections, sources = load_prepared(Path(config.workdir) / PREPARED)
    # the committed findings table belongs to the committed corpus; another folder gets its own copy
    default = Path(out_dir).resolve() == Path(CORPUS_DIR).resolve()
    audit_table = AUDIT_DIR / AUDIT_TABLE if default else Path(out_dir) / AUDIT_TABLE
    return assemble_corpus(materials, reference_materials(config.metals), rejections, config.store.records(),
                           config.settings, out_dir, sources=sources, metals=config.metals,
                           omnixas_cu_offset=omnixas_cu_offset(), audit_table=audit_table)


def build_corpus(
    config: CampaignConfig,
    entries: Entries | Mapping[str, Entries],
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
    # the order prefers rarer (oxidation state, CN) classes among the labels finished so far
    config.classes = label_classes(config.store.records())
    config.seeded = seeded_materials(config.store.records())
    save_order_classes(config.workdir, config.classes)
    references = reference_materials(config.metals)
    last = [time.monotonic()]

    def maybe_assemble(record: dict) -> None:
        if assemble_every and time.monotonic() - last[0] > assemble_every:
            last[0] = time.monotonic()
            try:
                manifest = assemble_from_workdir(config, out_dir)
                logger.info("corpus written: %d materials, hash %s", manifest["n_materials"],
                         manifest["content_hash"][:12])
            except Exception as err:  # noqa: BLE001 a failed snapshot must not stop the campaign
                logger.warning("could not write the corpus snapshot: %s", err)

    summary = run_campaign(materials, references, config, scheduler=scheduler, n_workers=n_workers,
                           progress=progress, max_items=max_items, on_record=maybe_assemble)
    return summary, assemble_from_workdir(config, out_dir)


@dataclass
class CorpusBuild:
    manifest: dict[str, Any]
    seeded: dict[str, Any] | None = None  # what seed_from_snapshot took as done
    summary: CampaignSummary | None = None  # None when the corpus was only assembled


def run_corpus_build(
    config: CampaignConfig,
    out_dir: str | Path = CORPUS_DIR,
    entries: Entries | Mapping[str, Entries] | None = None,
    sources: dict[str, str] | None = None,
    *,
    seed_from: str | Path | None = None,
    seed: bool = True,
    assemble_only: bool = False,
    log: Callable[[str], None] | None = None,
    **build_options: Any,
) -> CorpusBuild:
    """``sfn-stream dataset build``: seed the campaign from a corpus snapshot (``seed``), then run it
    and write the corpus (:func:`build_corpus`, which takes ``build_options``: scheduler, n_workers,
    max_items, assemble_every, refresh_structures, progress), or (``assemble_only``) only write the
    corpus from what it has finished. ``entries`` and ``sources`` are needed unless ``assemble_only``.
    """
    seeded = seed_from_snapshot(config, seed_from, out_dir, log) if seed else None
    if assemble_only:
        campaign_materials(config)  # says so when there is no campaign to assemble
        return CorpusBuild(assemble_from_workdir(config, out_dir), seeded)
    if entries is None or sources is None:
        raise ValueError("building a corpus needs the source entries and their description")
    summary, manifest = build_corpus(config, entries, sources, out_dir, **build_options)
    return CorpusBuild(manifest, seeded, summary)


def default_settings() -> FeffSettings:
    return corpus_settings()
