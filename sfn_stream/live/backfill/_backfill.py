"""Backfill: analyse runs already stored in Tiled and add sfn-stream's derived stream and summary in place.

    report = backfill(client, where={"sfn.sample": "S-042"})
    report.counts      # {"written": 3, "unchanged": 0, "skipped": 1, "failed": 0}

Each selected run is read back as Bluesky documents (the server's BlueskyRun exporter, or its stream
tables where the server has none), replayed through the live plugin's ``RunProcessor`` and written
back with ``write_derived_into_run``. A run that already has ``stop['sfn']`` is left unchanged unless
``force``; a run no analysis recognises (not XANES or PXRD) is skipped with the reason.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Iterable, Mapping

from sfn_stream.live.analyses import RunConvention
from sfn_stream.live.delivery import StoredRunError, write_derived_into_run
from ._read import stored_documents
from ._replay import replay_run
from ._select import select_runs

WRITTEN, UNCHANGED, SKIPPED, FAILED = "written", "unchanged", "skipped", "failed"
NOT_RECOGNISED = "not a XANES or PXRD run (no sfn-stream analysis recognises it)"


@dataclass
class RunOutcome:
    """What a backfill did to one run: ``status`` is written, unchanged, skipped or failed."""

    uid: str
    status: str
    reason: str | None = None
    kind: str | None = None
    rows: int = 0  # derived rows written (spectra or frames predicted)
    analysis_seconds: float = 0.0  # replaying the documents through the processor


@dataclass
class BackfillReport:
    """Every run's outcome and the wall time of the backfill (runs/s and spectra/s are over ``seconds``)."""

    outcomes: list[RunOutcome] = field(default_factory=list)
    seconds: float = 0.0  # backfilling the selected runs
    load_seconds: float = 0.0  # loading the model bundles, before that
    analysis_seconds: float = 0.0  # replaying the documents through the processor (preprocessing, models)

    @property
    def counts(self) -> dict[str, int]:
        counts = Counter(outcome.status for outcome in self.outcomes)
        return {status: counts.get(status, 0) for status in (WRITTEN, UNCHANGED, SKIPPED, FAILED)}

    @property
    def spectra(self) -> int:
        """Derived rows written (one per XANES spectrum, one per PXRD frame)."""
        return sum(outcome.rows for outcome in self.outcomes if outcome.status == WRITTEN)

    def skipped_reasons(self) -> dict[str, int]:
        return dict(Counter(o.reason for o in self.outcomes if o.status in (SKIPPED, FAILED)))

    def to_dict(self) -> dict[str, Any]:
        seconds = self.seconds or float("nan")
        return {
            "runs": len(self.outcomes),
            **self.counts,
            "spectra": self.spectra,
            "seconds": round(self.seconds, 3),
            "analysis_seconds": round(self.analysis_seconds, 3),
            "model_load_seconds": round(self.load_seconds, 3),
            "runs_per_second": round(len(self.outcomes) / seconds, 3),
            "spectra_per_second": round(self.spectra / seconds, 3),
            "reasons": self.skipped_reasons(),
            "outcomes": [asdict(outcome) for outcome in self.outcomes],
        }


class Backfill:
    """Backfill runs of one Tiled catalog with one convention and one set of models."""

    def __init__(self, client, *, convention: RunConvention | None = None, models=None, force: bool = False):
        from sfn_stream.core.predict import default_registry
        from sfn_stream.live.analyses import SampleMemory

        self.client = client
        # Runs replayed in one backfill are fused per sample in the order visited (start time), as live;
        # runs already analysed are not re-read, so their edges do not enter a later run's fusion.
        self.samples = SampleMemory()
        self._runs = client.include_data_sources()  # as TiledWriter sees them
        self.convention = convention or RunConvention()
        self.models = models or default_registry()
        self.force = force

    def run(self, run_uid: str) -> RunOutcome:
        """Backfill one run; a failure is recorded in the outcome, not raised."""
        try:
            return self._run(run_uid)
        except StoredRunError as err:
            return RunOutcome(run_uid, FAILED, str(err))
        except Exception as err:  # one bad run must not stop a backfill of thousands
            return RunOutcome(run_uid, FAILED, f"{type(err).__name__}: {err}")

    def _run(self, run_uid: str) -> RunOutcome:
        run = self._runs[run_uid]
        stop = run.metadata.get("stop")
        if not stop:
            return RunOutcome(run_uid, SKIPPED, "the run has no stop document (still running or cut short)")
        if self.convention.metadata_key in stop and not self.force:
            return RunOutcome(run_uid, UNCHANGED, f"already has stop.{self.convention.metadata_key}")
        started = time.perf_counter()
        replayed = replay_run(stored_documents(run), convention=self.convention, models=self.models,
                              samples=self.samples)
        seconds = time.perf_counter() - started
        if replayed.kind is None or replayed.summary is None:
            return RunOutcome(run_uid, SKIPPED, NOT_RECOGNISED, analysis_seconds=seconds)
        written = write_derived_into_run(run, replayed.derived_docs, replayed.summary, force=self.force,
                                         metadata_key=self.convention.metadata_key)
        if not written:
            return RunOutcome(run_uid, UNCHANGED, "already complete", replayed.kind, analysis_seconds=seconds)
        return RunOutcome(run_uid, WRITTEN, None, replayed.kind, replayed.rows, seconds)


def backfill(client, *, uids: Iterable[str] = (), where: Mapping[str, Any] | None = None,
             since: datetime | float | None = None, until: datetime | float | None = None, force: bool = False,
             convention: RunConvention | None = None, models=None, progress: bool = False) -> BackfillReport:
    """Backfill the runs matching every criterion given (see ``select_runs``); with ``progress``, a tqdm bar.

    One run at a time: concurrent writers gain nothing on an SQLite-backed server, which answers
    "database is locked", and TiledWriter retries a failed append by force (possibly twice written).
    """
    from tqdm import tqdm

    selected = select_runs(client, uids=uids, where=where, since=since, until=until)  # an unknown uid fails here
    loading = time.perf_counter()
    worker = Backfill(client, convention=convention, models=models, force=force)
    worker.models.preload()  # the bundles are loaded once, before the clock starts
    report = BackfillReport(load_seconds=time.perf_counter() - loading)
    started = time.perf_counter()
    with tqdm(selected, desc="backfill", unit="run", disable=not progress) as bar:
        for uid in bar:
            report.outcomes.append(worker.run(uid))
            bar.set_postfix(report.counts, refresh=False)
    report.seconds = time.perf_counter() - started
    report.analysis_seconds = sum(outcome.analysis_seconds for outcome in report.outcomes)
    return report
