"""Structure inference from Bluesky: one sample's XANES and PXRD runs in, a run of ranked candidates out.

    plugin = SfnPlugin(make_tiled_writer(client),
                       structure_inference=StructureInferenceOptions(sources=["amcsd", "aflow", "robocrys"]))

The rule (automatic trigger): runs of one sample share ``sfn.sample`` in their start documents.
When a XANES run or a PXRD run of a sample stops with usable predictions, and the plugin holds
a usable run of the other kind for the same sample, the plugin infers the sample's structure
from the latest usable XANES run of each absorber and the latest usable PXRD run of that
sample, once per such combination of runs. The elements come from ``sfn.elements`` or
``sfn.composition`` of those runs (their union, absorbers included); a sample whose element set
is unknown (fewer than 2 elements) is not inferred automatically. ``SfnPlugin.infer_structure``
triggers it by hand for given run uids.

The result is a run of its own, written through the plugin's downstream callbacks (so
TiledWriter stores it beside the raw runs):

- start: ``plan_name="sfn_structure_inference"``, ``sample`` (when known), ``source_runs``, ``elements`` at the top
  level, and ``sfn = {kind: 'structure_inference', sample, source_runs, xanes_runs, xrd_run,
  elements, trigger, top, sources, inputs}``;
- stream ``sfn_structure_candidates``: one event per candidate, best first (no stream when none);
- stop: ``sfn = {kind, sample, status ('ok' | 'empty' | 'error'), n_candidates, top_formula,
  top_crystal_system, top_space_group, ..., reason, seconds, source_runs, provenance}``;
  ``exit_status='fail'`` with the reason when inference raised. The raw runs are never touched.

This is an after-stop consumer (``consumers.base``): ``SfnPlugin(structure_inference=options)`` adds
one. Inference runs on the plugin's worker thread (never the RunEngine's): documents that arrive
meanwhile wait in its queue. Build the template index beforehand (``sfn-stream infer-structure``
once, or ``sfn_stream.core.structure.template_index``): building the AMCSD index takes about an hour.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from event_model import compose_run

from sfn_stream import __version__
from sfn_stream.core.predict import parse_elements
from sfn_stream.core.serialize import json_safe
from sfn_stream.core.structure import InferenceRequest, InferenceResult, XrdInput, infer_structures, template_index
from sfn_stream.live.documents import STRUCTURE_KIND, DerivedStreams, run_summary, stop_with_summary
from .base import BaseConsumer, FinishedRun, register_consumer

logger = logging.getLogger(__name__)

STRUCTURE_STREAM = "sfn_structure_candidates"
STRUCTURE_PLAN = "sfn_structure_inference"
STRUCTURE_CONSUMER = "structure"  # the consumer's name (SfnPlugin(consumers=["structure"]))
MIN_TABLE_PROBABILITY = 0.01  # predicted states / CNs rarer than this are left out of the request
_USABLE = ("ok", "flagged")


@dataclass(frozen=True)
class StructureInferenceOptions:
    """How the plugin infers structures (pass to ``SfnPlugin(structure_inference=...)``).

    ``sources``: template sources (names, CIF folders or source objects; None: amcsd, aflow, robocrys);
    ``index``: a prebuilt ``TemplateIndex`` instead; ``cache_dir``: where source indices are cached;
    ``top``: candidates kept; ``automatic``: apply the trigger rule (off: only ``infer_structure``);
    ``min_probability``: predicted oxidation states / CNs below it are left out of the request;
    ``space_group_prior``: pass the PXRD run's space groups (when its bundle names them) to the request.
    """

    sources: Sequence[Any] | None = None
    index: Any = None
    cache_dir: str | None = None
    top: int = 5
    automatic: bool = True
    min_probability: float = MIN_TABLE_PROBABILITY
    space_group_prior: bool = True


@dataclass
class RunInputs:
    """What structure inference takes from one stopped XANES or PXRD run."""

    uid: str
    kind: str  # 'xanes' or 'xrd'
    sample: str | None
    elements: tuple[str, ...]
    status: str | None
    bundle_id: str | None
    absorber: str | None = None
    oxidation_states: dict[int, float] = field(default_factory=dict)
    coordination: dict[int, float] = field(default_factory=dict)
    crystal_systems: dict[str, float] | None = None
    space_groups: dict[int, float] | None = None
    x: np.ndarray | None = None
    intensity: np.ndarray | None = None
    axis: str = "2theta"
    wavelength: float | None = None
    frames: int = 0

    @property
    def usable(self) -> bool:
        if self.kind == "xanes":
            return self.status in _USABLE and bool(self.absorber) and bool(self.oxidation_states)
        return self.x is not None and self.intensity is not None


def run_inputs(run: FinishedRun, *, min_probability: float = MIN_TABLE_PROBABILITY) -> RunInputs | None:
    """The inputs of a finished run (None for runs that are neither XANES nor PXRD)."""
    if run.kind not in ("xanes", "xrd"):
        return None
    md, summary, analysis = run.metadata, run.summary or {}, run.analysis
    elements = _elements(md.get("elements") or md.get("composition")) or tuple(summary.get("elements") or ())
    inputs = RunInputs(run.uid, run.kind, _text_or_none(md.get("sample")), elements, summary.get("status"),
                       summary.get("bundle_id"))
    if run.kind == "xanes":
        inputs.absorber = summary.get("absorber")
        prediction = analysis.prediction
        per_element = prediction.per_element.get(inputs.absorber, {}) if prediction is not None else {}
        inputs.oxidation_states = _table(per_element.get("oxidation_state"), min_probability)
        inputs.coordination = _table(per_element.get("coordination_number"), min_probability)
        if inputs.absorber and inputs.absorber not in inputs.elements:
            inputs.elements = (*inputs.elements, inputs.absorber)
    else:
        inputs.crystal_systems = analysis.crystal_system_probabilities()
        # an analysis of another design may name no space groups: no space-group prior then
        space_groups = getattr(analysis, "space_group_probabilities", None)
        inputs.space_groups = space_groups() if space_groups is not None else None
        measured = analysis.measured_pattern()
        if measured is not None:
            inputs.x, inputs.intensity, inputs.frames = measured
        inputs.axis = str(md.get("axis", "2theta"))
        wavelength = md.get("wavelength")
        inputs.wavelength = float(wavelength) if wavelength is not None else None
    return inputs


def build_request(xanes_runs: Sequence[RunInputs], xrd_run: RunInputs,
                  elements: Sequence[str] | None = None, *, space_group_prior: bool = True) -> InferenceRequest:
    """The inference request of one sample: elements, each absorber's predicted tables, the PXRD run's
    crystal-system probabilities, its space groups (when its bundle names them) and its mean pattern."""
    if xrd_run.x is None or xrd_run.intensity is None:
        raise ValueError(f"PXRD run {xrd_run.uid} has no usable frame to match candidates against")
    if elements is None:
        merged: list[str] = []
        for run in (*xanes_runs, xrd_run):
            merged.extend(el for el in run.elements if el not in merged)
        elements = merged
    oxidation, coordination = {}, {}
    for run in xanes_runs:
        if run.absorber and run.oxidation_states:
            oxidation[run.absorber] = dict(run.oxidation_states)
        if run.absorber and run.coordination:
            coordination[run.absorber] = dict(run.coordination)
    return InferenceRequest(
        elements=tuple(elements),
        xrd=XrdInput(np.asarray(xrd_run.x), np.asarray(xrd_run.intensity), xrd_run.axis, xrd_run.wavelength,
                     label=xrd_run.uid),
        oxidation_states=oxidation, coordination=coordination,
        crystal_systems=dict(xrd_run.crystal_systems) if xrd_run.crystal_systems else None,
        space_group_probabilities=dict(xrd_run.space_groups) if xrd_run.space_groups and space_group_prior else None,
        raw_run_uids=tuple(run.uid for run in (*xanes_runs, xrd_run)),
    )


class StructureConsumer(BaseConsumer):
    """Structure inference after the stop: inputs of stopped runs, the trigger rule, the runs it writes
    (``results``: inference run uid -> stop summary)."""

    name = STRUCTURE_CONSUMER

    def __init__(self, options: StructureInferenceOptions | None = None):
        super().__init__()
        self.options = options or StructureInferenceOptions()
        self.inputs: OrderedDict[str, RunInputs] = OrderedDict()
        self.results: OrderedDict[str, dict] = OrderedDict()
        self._done: set[tuple] = set()
        self._index = None
        self._skipped: dict[str, str] = {}

    # -- bookkeeping ------------------------------------------------------------------------
    def run_finished(self, run: FinishedRun) -> None:
        """Remember a stopped run; run the inferences the rule calls for."""
        inputs = run_inputs(run, min_probability=self.options.min_probability)
        if inputs is None:
            return
        self.inputs[run.uid] = inputs
        self.inputs.move_to_end(run.uid)
        while len(self.inputs) > self.keep:
            self.inputs.popitem(last=False)
            self._done = {key for key in self._done if key[1] in self.inputs}
        if not self.options.automatic:
            return
        for xanes_runs, xrd_run in self.due(inputs):
            self.run(xanes_runs, xrd_run, sample=inputs.sample, trigger="automatic")

    def infer(self, run_uids: Sequence[str], *, sample: str | None = None,
              elements: Sequence[str] | None = None) -> str:
        """Infer by hand from the given XANES run(s) and one PXRD run; returns the inference run's uid."""
        xanes_runs, xrd_run = self.lookup(run_uids)
        return self.run(xanes_runs, xrd_run, sample=sample, elements=elements, trigger="manual")

    def due(self, inputs: RunInputs) -> list[tuple[list[RunInputs], RunInputs]]:
        """The combinations the automatic rule runs now that ``inputs``' run has stopped (at most one)."""
        if not inputs.sample or not inputs.usable:
            return []
        same = [r for r in self.inputs.values() if r.sample == inputs.sample and r.usable]
        latest_xanes: dict[str, RunInputs] = {}
        xrd_run = None
        for run in same:  # oldest first: later runs replace earlier ones
            if run.kind == "xanes":
                latest_xanes[run.absorber] = run
            else:
                xrd_run = run
        if xrd_run is None or not latest_xanes:
            return []
        xanes_runs = list(latest_xanes.values())
        elements = {el for run in (*xanes_runs, xrd_run) for el in run.elements}
        key = (frozenset(r.uid for r in xanes_runs), xrd_run.uid)
        if len(elements) < 2:
            logger.info("sfn-stream: sample %s: element set unknown (give sfn.composition), no structure "
                        "inference", inputs.sample)
            return []
        if key in self._done:
            return []
        self._done.add(key)
        return [(xanes_runs, xrd_run)]

    def lookup(self, uids: Sequence[str]) -> tuple[list[RunInputs], RunInputs]:
        """XANES runs and the one PXRD run among ``uids`` (all must be runs this plugin has seen stop)."""
        missing = [uid for uid in uids if uid not in self.inputs]
        if missing:
            raise KeyError(f"runs not seen (or no longer kept) by this plugin: {', '.join(missing)}; "
                           "structure inference needs the XANES and PXRD runs to pass through it")
        runs = [self.inputs[uid] for uid in uids]
        xrd = [r for r in runs if r.kind == "xrd"]
        if len(xrd) != 1:
            raise ValueError(f"give exactly one PXRD run, got {len(xrd)} among {', '.join(uids)}")
        return [r for r in runs if r.kind == "xanes"], xrd[0]

    # -- one inference run ------------------------------------------------------------------
    def run(self, xanes_runs: Sequence[RunInputs], xrd_run: RunInputs, *, sample: str | None = None,
            elements: Sequence[str] | None = None, trigger: str = "manual") -> str:
        """Infer, and write the result as a complete run through ``emit``; returns its uid. Never raises
        for a failed inference: the run then stops with ``exit_status='fail'`` and the reason."""
        started = time.perf_counter()
        source_runs = [r.uid for r in xanes_runs] + [xrd_run.uid]
        if sample is None:
            sample = xrd_run.sample or next((r.sample for r in xanes_runs if r.sample), None)
        sample = _text_or_none(sample)
        request, request_error = None, None
        try:
            request = build_request(xanes_runs, xrd_run, elements, space_group_prior=self.options.space_group_prior)
            request_elements = list(request.elements)
        except Exception as err:
            request_error = err
            request_elements = list(elements) if elements is not None else []
        key = self.metadata_key
        md = {
            "kind": STRUCTURE_KIND, "sample": sample, "source_runs": source_runs,
            "xanes_runs": [r.uid for r in xanes_runs], "xrd_run": xrd_run.uid, "elements": request_elements,
            "trigger": trigger, "top": self.options.top, "sources": self._source_names(),
        }
        if request is not None:
            inputs = request.to_dict()
            inputs.pop("raw_run_uids", None)
            md["inputs"] = inputs
        start_md = {"plan_name": STRUCTURE_PLAN, "source_runs": source_runs, "elements": request_elements, key: md}
        if sample is not None:  # event-model's start schema: a string (or a dict), never null
            start_md["sample"] = sample
        bundle = compose_run(metadata=json_safe(start_md))
        uid = bundle.start_doc["uid"]
        self.emit("start", bundle.start_doc)
        provenance: dict[str, Any] = {
            "trigger": trigger, "software": f"sfn-stream {__version__}",
            "xanes_bundles": {r.uid: r.bundle_id for r in xanes_runs}, "xrd_bundle": xrd_run.bundle_id,
            "xrd_frames": xrd_run.frames,
        }
        exit_status, stop_reason, rows = "success", "", []
        try:
            if request_error is not None:
                raise request_error
            result = self._infer(request)
            rows = [candidate_row(c) for c in result.candidates]
            summary = result_summary(result)
            provenance.update(sources=result.sources, skipped_sources={**self._skipped, **result.skipped_sources},
                              counts=result.counts, timings=result.seconds, notes=result.notes)
        except Exception as err:  # a complete run with the reason, whatever went wrong
            logger.exception("sfn-stream: structure inference failed for sample %s", sample)
            exit_status, stop_reason = "fail", f"{type(err).__name__}: {err}"
            summary = {"status": "error", "n_candidates": 0, "reason": stop_reason}
        streams = DerivedStreams(bundle.compose_descriptor, self.emit, validate=True)
        for row in rows:
            streams.write(STRUCTURE_STREAM, row)
        stop = bundle.compose_stop(exit_status=exit_status, reason=stop_reason)
        summary = run_summary(STRUCTURE_KIND, sample, **summary, seconds=round(time.perf_counter() - started, 3),
                              source_runs=source_runs, elements=request_elements, provenance=provenance)
        stop = stop_with_summary(stop, summary, key)
        self.emit("stop", stop)
        self.results[uid] = stop[key]
        self.stats.record(uid, stop[key]["seconds"])
        while len(self.results) > self.keep:
            self.results.popitem(last=False)
        return uid

    def _infer(self, request: InferenceRequest) -> InferenceResult:
        options = self.options
        if options.index is not None:
            index = options.index
        else:
            if self._index is None:  # indices are cached on disk; keep the combined one in memory too
                self._index, self._skipped = template_index(self._sources(), directory=options.cache_dir)
            index = self._index
        return infer_structures(request, index=index, top=options.top)

    def _sources(self) -> list:
        from sfn_stream.core.structure import DEFAULT_SOURCES

        return list(self.options.sources) if self.options.sources is not None else list(DEFAULT_SOURCES)

    def _source_names(self) -> list[str]:
        if self.options.index is not None:
            return sorted({e.source for e in self.options.index.entries})
        return [s if isinstance(s, str) else str(getattr(s, "name", s)) for s in self._sources()]


def candidate_row(candidate) -> dict[str, Any]:
    """One event of the ``sfn_structure_candidates`` stream."""
    lattice = candidate.structure.lattice
    components = candidate.components
    return {
        "rank": int(candidate.rank), "formula": candidate.formula, "crystal_system": candidate.crystal_system,
        "space_group": candidate.spacegroup_symbol, "space_group_number": int(candidate.spacegroup_number),
        "score": float(candidate.score), "probability": float(candidate.probability),
        "xrd_similarity": float(components.get("xrd_similarity", math.nan)),
        "formula_prior": float(components.get("formula_prior", math.nan)),
        "crystal_system_prior": float(components.get("crystal_system_prior", math.nan)),
        "space_group_log_prior": float(components.get("space_group_log_prior", math.nan)),
        "cn_probability": float(components.get("cn_probability", math.nan)),
        "substitution_probability": float(components.get("substitution_probability", math.nan)),
        "template_id": candidate.template_id, "template_source": candidate.template_source,
        "template_label": candidate.template_label, "template_formula": candidate.template_formula,
        "substitution": json.dumps(json_safe(candidate.substitution), sort_keys=True),
        **{name: float(v) for name, v in zip(("a", "b", "c", "alpha", "beta", "gamma"),
                                              (*lattice.abc, *lattice.angles))},
        "cif": candidate.to_cif(),
    }


def result_summary(result: InferenceResult) -> dict[str, Any]:
    """The queryable part of the stop summary."""
    best = result.best
    summary: dict[str, Any] = {"status": "ok" if best is not None else "empty",
                               "n_candidates": len(result.candidates), "reason": result.reason}
    if best is not None:
        summary.update(top_formula=best.formula, top_crystal_system=best.crystal_system,
                       top_space_group=best.spacegroup_symbol, top_space_group_number=best.spacegroup_number,
                       top_score=round(best.score, 4), top_probability=round(best.probability, 4),
                       top_template=best.template_id,
                       formulas=list(dict.fromkeys(c.formula for c in result.candidates)))
    return summary


def _table(prediction, min_probability: float) -> dict[int, float]:
    if prediction is None:
        return {}
    table = {}
    for label, p in prediction.probabilities.items():
        try:
            value, prob = int(label), float(p)
        except (TypeError, ValueError):
            continue
        if math.isfinite(prob) and prob >= min_probability:
            table[value] = prob
    return table


def _elements(spec) -> tuple[str, ...]:
    if not spec:
        return ()
    try:
        return tuple(parse_elements(spec)[0])
    except ValueError:
        return ()


def _text_or_none(value) -> str | None:
    return None if value in (None, "") else str(value)


register_consumer(STRUCTURE_CONSUMER, StructureConsumer)
