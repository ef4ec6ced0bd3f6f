"""A corpus material measured end to end with the next-edge agent, on the simulated beamline.

    result = measure_with_agent(RE, plugin, agent, "amcsd-00018", first_edge=None, on_step=print)

PXRD, then the first edge (the user's ``first_edge`` or the agent's choice), then the agent's edges
through bluesky-adaptive's ``optimize`` until it says done; with ``NextEdgeOptions(structure=...)`` the
agent also runs structure inference once confident enough. ``plugin`` must have ``agent`` among its
consumers (the agent sees every run stop there and writes its decision runs through the plugin, to Tiled).

Each decision becomes an :class:`AgentStep` as the plugin emits it (``on_step`` is called from the
plugin's thread): edges measured, every metal's calibrated confidence, the agent's next edge or why it is
done, and how long after the triggering run's stop the suggestion was ready (``stop_to_suggestion_ms``: the
run's own analysis, then the agent's fusion and scoring, to ``stop.sfn.decided_at``) and its run complete
(``stop_to_decision_run_ms``: structure inference when due, its streams and stop too). Both are differences
of times stamped in the documents, so they do not depend on when Tiled got them.

Used by ``sfn-stream agent measure``, the IPython profile's ``measure_with_agent`` and
``python -m sfn_stream.simulated_beamline.agent_demo``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from sfn_stream.live.consumers import NextEdgeAgent
from sfn_stream.live.consumers.next_edge import NEXT_EDGE_KIND, TASKS

from ._corpus_sample import (
    CorpusSample,
    corpus_beamline,
    load_corpus_sample,
    measure_sample,
)


@dataclass
class AgentStep:
    """One decision of the agent, after one run of the sample."""

    decision_run: str
    trigger_run: str | None
    trigger: str  # 'pxrd', or the metal whose edge was measured
    edges_measured: list[str]
    edges_remaining: list[str]
    next_edge: str  # '' when done
    done: bool
    reason: str
    confidence: float  # the least calibrated confidence over metals and tasks
    metal_confidence: dict[str, dict[str, float]]
    species: list[str]
    decision_ms: float  # the agent's fusion and scoring
    stop_to_suggestion_ms: float | None  # from the triggering run's stop to the decision made (its run's start)
    stop_to_decision_run_ms: float | None  # ... to the decision run written (its stop: streams included)
    structure_run: str | None = None


@dataclass
class AgentMeasurement:
    """What measuring one sample with the agent gave."""

    material_id: str
    sample: str
    formula: str
    metals: list[str]
    first_edge: str | None
    steps: list[AgentStep] = field(default_factory=list)
    truth: dict[str, Any] = field(default_factory=dict)
    tiled_uri: str | None = None

    @property
    def final(self) -> AgentStep | None:
        return self.steps[-1] if self.steps else None

    @property
    def edges_measured(self) -> list[str]:
        return list(self.final.edges_measured) if self.final else []

    def labels_right(self, predicted: dict[str, dict[str, int | None]]) -> tuple[int, int]:
        """(right, labelled) of ``predicted`` (metal -> task -> class) against the corpus labels."""
        right = total = 0
        for metal, labels in self.truth.get("metals", {}).items():
            for task in TASKS:
                if labels.get(task) is None or metal not in predicted:
                    continue
                total += 1
                right += int(predicted[metal].get(task) == labels[task])
        return right, total

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["edges_measured"] = self.edges_measured
        return out


class DecisionRecorder:
    """A downstream callback of the plugin: turns the agent's decision runs of one sample into steps, timed
    against the stop of the run that triggered each."""

    def __init__(self, sample: str, on_step: Callable[[AgentStep], None] | None = None):
        self.sample, self.on_step = sample, on_step
        self.steps: list[AgentStep] = []
        self._stops: dict[str, tuple[float, str]] = {}  # raw run uid -> (stop time, what it measured)
        self._decisions: dict[str, dict] = {}  # decision run uid -> its start
        self._kinds: dict[str, str] = {}  # raw run uid -> 'pxrd' or its edge
        self._lock = threading.Lock()

    def __call__(self, name: str, doc: dict) -> None:
        if name == "start":
            self._start(doc)
        elif name == "stop":
            self._stop(doc)

    def _start(self, doc: dict) -> None:
        sfn = doc.get("sfn") or {}
        if sfn.get("sample") != self.sample:
            return
        if sfn.get("kind") == NEXT_EDGE_KIND:
            self._decisions[doc["uid"]] = doc
        elif sfn.get("kind") in ("xanes", "xrd"):
            self._kinds[doc["uid"]] = "pxrd" if sfn["kind"] == "xrd" else str(sfn.get("element") or "")

    def _stop(self, doc: dict) -> None:
        run = doc.get("run_start")
        if run in self._kinds:
            self._stops[run] = (float(doc["time"]), self._kinds[run])
        elif run in self._decisions:
            self._record(self._decisions.pop(run), doc)

    def _record(self, start: dict, stop: dict) -> None:
        summary = stop.get("sfn") or {}
        trigger = start["sfn"].get("trigger_run")
        stopped, measured = self._stops.get(trigger, (None, "?"))
        step = AgentStep(
            decision_run=start["uid"], trigger_run=trigger, trigger=measured,
            edges_measured=list(summary.get("edges_measured", [])),
            edges_remaining=list(summary.get("edges_remaining", [])), next_edge=summary.get("next_edge", ""),
            done=bool(summary.get("done")), reason=summary.get("reason", ""),
            confidence=float(summary.get("confidence", 0.0)),
            metal_confidence=dict(summary.get("metal_confidence") or {}), species=list(summary.get("species", [])),
            decision_ms=float(summary.get("decision_ms", 0.0)),
            stop_to_suggestion_ms=_ms(summary.get("decided_at", start["time"]), stopped),
            stop_to_decision_run_ms=_ms(stop["time"], stopped),
            structure_run=summary.get("structure_run"))
        with self._lock:
            self.steps.append(step)
        if self.on_step is not None:
            self.on_step(step)


def _ms(later: float, earlier: float | None) -> float | None:
    return round((float(later) - earlier) * 1000, 1) if earlier is not None else None


def measure_with_agent(RE, plugin, agent: NextEdgeAgent, material: str | CorpusSample, *,
                       first_edge: str | None = None, name: str | None = None, pxrd: bool = True, seed: int = 0,
                       on_step: Callable[[AgentStep], None] | None = None, max_edges: int | None = None,
                       wait_seconds: float = 120.0) -> AgentMeasurement:
    """Measure ``material`` (a corpus id or a loaded sample) end to end; see the module docstring.

    Raises KeyError for a material the corpus lacks and ValueError for a first edge the sample has not.
    """
    from sfn_stream.live.consumers.next_edge_optimizer import NextEdgeOptimizer

    sample = material if isinstance(material, CorpusSample) else load_corpus_sample(material)
    if len(sample.metals) < 1:
        raise ValueError(f"{sample.material_id}: no 3d-metal edge computed")
    if first_edge is not None and first_edge not in sample.metals:
        raise ValueError(f"{sample.material_id} ({sample.formula}) has no {first_edge} edge; its edges: "
                         f"{', '.join(sample.metals)}")
    if agent not in plugin.consumers:
        raise ValueError("the plugin does not run this agent: SfnPlugin(..., consumers=[agent])")
    name = name or sample.material_id
    recorder = DecisionRecorder(name, on_step)
    plugin.subscribe(recorder)
    mono, xas, powder = corpus_beamline(sample, seed=seed)
    optimizer = NextEdgeOptimizer(agent, sample=name, composition=sample.composition, first_edge=first_edge,
                                  wait=plugin.flush, wait_seconds=wait_seconds, max_edges=max_edges, progress=None)
    try:
        RE(measure_sample(sample, mono, xas, powder, optimizer, name=name, pxrd=pxrd))
    finally:
        plugin.flush(wait_seconds)
        recorder.on_step = None
    return AgentMeasurement(material_id=sample.material_id, sample=name, formula=sample.formula,
                            metals=sample.metals, first_edge=first_edge, steps=list(recorder.steps),
                            truth=sample.truth)


def predicted_labels(agent: NextEdgeAgent, sample: str) -> dict[str, dict[str, int | None]]:
    """The agent's latest top class per metal and task for ``sample``."""
    decision = agent.latest.get(sample)
    if decision is None:
        return {}
    out = {}
    for metal, belief in decision.beliefs.items():
        out[metal] = {}
        for task in TASKS:
            label, _ = belief.top(task)
            out[metal][task] = int(label) if label is not None else None
    return out


def format_step(step: AgentStep, n_metals: int) -> str:
    """One progress line: what was measured, each metal's confidence, the agent's next edge or why done."""
    measured = ", ".join(step.edges_measured) or "-"
    per_metal = "  ".join(f"{metal} ox {c.get('oxidation_state', 0):.2f} CN {c.get('coordination_number', 0):.2f}"
                          for metal, c in step.metal_confidence.items())
    after = f"done: {step.reason}" if step.done else f"next {step.next_edge}: {step.reason}"
    latency = (f"ready {step.stop_to_suggestion_ms:.0f} ms after the stop" if step.stop_to_suggestion_ms is not None
               else "")
    return (f"after {step.trigger}: edges {measured} ({len(step.edges_measured)}/{n_metals}) | {per_metal} | "
            f"{after} | {latency}").rstrip(" |")
