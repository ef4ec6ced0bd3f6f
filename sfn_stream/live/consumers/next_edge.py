"""The next-edge agent: which 3d-metal K edge of a sample to measure next, and when to stop.

After each finished XANES or PXRD run of a sample (runs of one sample share ``sfn.sample``; its elements
come from ``sfn.composition``), the agent

1. fuses what is known of the sample's 3d metals: the multi-edge model's prediction from every edge
   measured so far (one forward pass, unmeasured metals included: the model's answer from the elements and
   the measured edges); where no bundle covers the sample's metals together, each run's own prediction, and
   for metals nothing predicts, the metal's class frequencies in the training labels (the calibration file);
2. scores each edge not yet measured by its expected value: the expected drop in entropy (bits) of the
   sample's oxidation states and CNs. The model's own probabilities are not trusted as they are (without
   its edge, the 3d bundle is often confidently wrong): each top probability is rescaled by how right such
   answers were on the corpus *validation* split, before and after the metal's own edge is measured
   (``sfn-stream bench agent --calibrate`` writes ``sfn_stream/data/next_edge_calibration.json``); the gain
   of an edge is the entropy of its metal's calibrated belief now minus that expected with its edge, plus
   its effect on the other metals where the validation split can measure it (``cross_remaining``; none
   assumed below 10 validation pairs); per hour of beamtime (``EdgeCost``: monochromator move +
   edge change + scan). ``confidence`` is the least calibrated top probability over metals and tasks;
3. always suggests a first edge; after it, says ``done`` when every metal's oxidation state and CN reach
   ``target_confidence``, when no edge is worth its cost (``min_bits_per_hour``), or when every edge is
   measured (both thresholds, unless given, as fitted on the validation split: ``EdgeCalibration.stopping``);
   and, with
   ``structure=StructureInferenceOptions(automatic=False, ...)``, runs structure inference once the
   oxidation states and the PXRD crystal system are confident enough.

Each decision is a run of its own, written through the plugin's ``emit`` (Tiled stores it beside the raw runs):

- start: ``plan_name="sfn_next_edge"``, ``sample``, ``source_runs`` (every run of the sample ingested),
  ``sfn = {kind: 'next_edge', sample, trigger_run, source_runs, elements, metals, options, calibration}``;
- streams ``sfn_next_edge_ingested`` (one row per source run: its edge and predictions),
  ``sfn_next_edge_candidates`` (one row per 3d metal of the sample: measured or not, expected bits,
  cost, score, worth it, chosen) and ``sfn_next_edge_posterior`` (the fused belief per metal);
- stop: ``sfn = {kind, sample, status, next_edge ('' when done), done, reason, confidence, edges_measured,
  edges_remaining, crystal_system, structure_run, ...}``: ``Key("stop.sfn.next_edge") == "Fe"``.

``NextEdgeOptimizer`` (``sfn_stream.live.consumers.next_edge_optimizer``) drives the same agent through
bluesky-adaptive's ``optimize`` plan.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any, ClassVar

import numpy as np
from event_model import compose_run

from sfn_stream import __version__
from sfn_stream.core.predict import COMPOSITION_UNKNOWN, PredictorError, default_registry, parse_elements
from sfn_stream.core.serialize import json_safe
from sfn_stream.core.spectra import k_edge_energy
from sfn_stream.live.documents import NEXT_EDGE_KIND, DerivedStreams, run_summary, stop_with_summary

from .base import BaseConsumer, FinishedRun, StartedRun, register_consumer
from .structure import StructureConsumer, StructureInferenceOptions

logger = logging.getLogger(__name__)

METALS_3D = ("Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn")
TASKS = ("oxidation_state", "coordination_number")
NEXT_EDGE_CONSUMER = "next_edge"
NEXT_EDGE_PLAN = "sfn_next_edge"
INGESTED_STREAM = "sfn_next_edge_ingested"
CANDIDATES_STREAM = "sfn_next_edge_candidates"
POSTERIOR_STREAM = "sfn_next_edge_posterior"
CALIBRATION_FILE = "next_edge_calibration.json"
_USABLE = ("ok", "flagged")

Table = dict[Any, float]  # class -> probability


# -- options ------------------------------------------------------------------------------------------
# The stopping rule without a fitted one (no calibration file, or one written before stopping was fitted).
DEFAULT_STOPPING = {"target_confidence": 0.9, "min_bits_per_hour": 2.0}


@dataclass(frozen=True)
class EdgeCost:
    """Beamtime of one more edge: the monochromator's travel, a fixed edge change (foil, harmonic rejection,
    gains) and the scan itself."""

    scan_seconds: float = 300.0
    change_seconds: float = 120.0
    move_seconds_per_kev: float = 20.0

    def seconds(self, edge: str, from_energy: float | None = None) -> float:
        target = k_edge_energy(edge)
        move = 0.0 if from_energy is None else abs(target - from_energy) / 1000.0 * self.move_seconds_per_kev
        return self.scan_seconds + self.change_seconds + move


@dataclass(frozen=True)
class NextEdgeOptions:
    """How the agent decides (pass to ``NextEdgeAgent(options)``).

    ``target_confidence``: done once every metal's oxidation state and CN reach it (calibrated top class
    probability); ``min_bits_per_hour``: an edge is worth measuring when its expected entropy drop per hour of
    beamtime reaches this. Left at None, both come from the calibration file's stopping rule (fitted on the
    validation split by ``sfn-stream bench agent --calibrate``), else from ``DEFAULT_STOPPING``;
    ``structure``: structure-inference options (use ``automatic=False``: the agent then
    decides when), run once the oxidation states reach ``structure_confidence`` and the PXRD crystal system
    ``crystal_system_confidence``; ``models``: a ``ModelRegistry`` (default: the process's).
    """

    cost: EdgeCost = EdgeCost()
    target_confidence: float | None = None
    min_bits_per_hour: float | None = None
    structure: StructureInferenceOptions | None = None
    structure_confidence: float = 0.7
    crystal_system_confidence: float = 0.6
    models: Any = None

    def stopping(self, calibration: EdgeCalibration | None = None) -> dict[str, float]:
        """The stopping rule in force: these options' values where given, else the calibration's fitted ones,
        else ``DEFAULT_STOPPING``."""
        fitted = (calibration.stopping if calibration is not None else None) or {}
        out = {}
        for key, default in DEFAULT_STOPPING.items():
            given = getattr(self, key)
            out[key] = float(given if given is not None else fitted.get(key, default))
        return out

    def describe(self, calibration: EdgeCalibration | None = None) -> dict[str, Any]:
        return {"cost": asdict(self.cost), **self.stopping(calibration),
                "stopping_from": "options" if None not in (self.target_confidence, self.min_bits_per_hour)
                else ("calibration" if calibration is not None and calibration.stopping else "defaults"),
                "structure": self.structure is not None,
                "structure_confidence": self.structure_confidence,
                "crystal_system_confidence": self.crystal_system_confidence}


# -- calibration --------------------------------------------------------------------------------------
@dataclass
class EdgeCalibration:
    """How right the model is about a metal before and after its own edge is measured (validation split).

    ``reliability``: metal -> task -> stage ('prior': elements and other edges only; 'edge': its own edge
    measured) -> ``{"accuracy", "confidence", "n"}``: the top class's accuracy and mean probability, shrunk
    towards the pooled figures of all metals (a handful of validation materials per metal). The model's
    elements-only answers are far from calibrated (the 3d bundle gives Cu without its edge > 0.9 for a state
    that is right for none of the validation Cu materials), so the agent rescales each top probability by
    accuracy / confidence of its stage before it uses it. ``cross_remaining``: how much of the *other* metals'
    entropy remains when one edge is added (None when too few multi-metal validation materials to say: no
    effect then); ``priors``: metal -> task -> class frequencies of the training labels, for metals no model
    predicts; ``stopping``: the stopping rule fitted on the validation split's multi-metal materials (the
    fewest edges whose accuracy at the stop stays within 1 % of every edge's), with the figures of the fit.
    """

    reliability: dict[str, dict[str, dict[str, dict[str, float]]]] = field(default_factory=dict)
    cross_remaining: float | None = None
    priors: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    stopping: dict[str, Any] = field(default_factory=dict)  # target_confidence, min_bits_per_hour + how fitted

    NEUTRAL_ACCURACY: ClassVar[dict[str, float]] = {"prior": 0.6, "edge": 0.8}  # a metal the file does not cover

    def expected_accuracy(self, metal: str, task: str, stage: str) -> float:
        entry = self.reliability.get(metal, {}).get(task, {}).get(stage)
        return float(entry["accuracy"]) if entry else self.NEUTRAL_ACCURACY[stage]

    def calibrated(self, metal: str, task: str, stage: str, top_probability: float) -> float:
        """The top probability rescaled to the stage's validation accuracy / mean confidence."""
        entry = self.reliability.get(metal, {}).get(task, {}).get(stage)
        if not entry or entry["confidence"] <= 0:
            return float(top_probability)
        return float(min(1.0, top_probability * entry["accuracy"] / entry["confidence"]))

    def applies_to(self, source: str) -> bool:
        """Whether a belief from ``source`` ('fused:<bundle>', 'model_prior:<bundle>' ...) may be rescaled: only
        the bundle this calibration was measured on (or any, for a neutral calibration)."""
        kind, _, bundle = source.partition(":")
        if kind not in ("fused", "model_prior"):
            return False
        measured_on = self.provenance.get("bundle_id")
        return measured_on is None or measured_on == bundle

    def prior(self, metal: str, task: str) -> Table:
        table = self.priors.get(metal, {}).get(task)
        return {_class_value(k): float(v) for k, v in table.items()} if table else {}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> EdgeCalibration:
        return cls(reliability=dict(raw.get("reliability", {})), cross_remaining=raw.get("cross_remaining"),
                   priors=dict(raw.get("priors", {})), provenance=dict(raw.get("provenance", {})),
                   stopping=dict(raw.get("stopping") or {}))

    @classmethod
    def shipped(cls) -> EdgeCalibration:
        """The committed calibration (a neutral one, said so in its provenance, when the file is absent)."""
        try:
            text = resources.files("sfn_stream.data").joinpath(CALIBRATION_FILE).read_text()
        except (FileNotFoundError, OSError):
            return cls(provenance={"note": f"{CALIBRATION_FILE} absent: neutral accuracies "
                                           f"{cls.NEUTRAL_ACCURACY} (run sfn-stream bench agent --calibrate)"})
        return cls.from_dict(json.loads(text))


def calibrated_entropy(confidence: float, n_classes: int) -> float:
    """Entropy (bits) of a belief whose top class is right with probability ``confidence`` and whose other
    classes share the rest evenly: the uncertainty the agent expects to remove."""
    c = min(max(confidence, 0.0), 1.0)
    rest = 1.0 - c
    out = -c * math.log2(c) if c > 0 else 0.0
    if rest > 0 and n_classes > 1:
        out += -rest * math.log2(rest / (n_classes - 1))
    return out


# -- beliefs ------------------------------------------------------------------------------------------
@dataclass
class MetalBelief:
    """What is believed of one metal of the sample, per task, and where it comes from."""

    metal: str
    tables: dict[str, Table]
    source: str  # 'fused:<bundle>', 'model_prior:<bundle>', 'run:<uid>' or 'class_prior'

    def top(self, task: str) -> tuple[Any, float]:
        table = self.tables.get(task) or {}
        if not table:
            return None, 0.0
        label = max(table, key=table.get)
        return label, float(table[label])

    def entropy(self, task: str) -> float:
        return entropy_bits(self.tables.get(task) or {})

    @property
    def stage(self) -> str:
        """'edge' when the metal's own edge went into the belief, 'prior' otherwise."""
        return "edge" if self.source.startswith(("fused", "run")) else "prior"

    def confidence(self, task: str, calibration: EdgeCalibration) -> float:
        """The top class's probability, rescaled by how right such beliefs were on the validation split."""
        p = self.top(task)[1]
        if not calibration.applies_to(self.source):
            return p
        return calibration.calibrated(self.metal, task, self.stage, p)


def entropy_bits(table: Mapping[Any, float]) -> float:
    """Shannon entropy (bits) of a class table (renormalised; an empty table has none)."""
    p = np.asarray([v for v in table.values() if v > 0 and math.isfinite(v)], dtype=float)
    if p.size == 0:
        return 0.0
    p = p / p.sum()
    return float(-(p * np.log2(p)).sum())


@dataclass
class EdgeInput:
    """A measured edge: the model window and the run's own prediction tables."""

    run_uid: str
    metal: str
    window: np.ndarray | None  # the 200-point model window (None when the run kept none)
    e0_shift: float
    run_tables: dict[str, Table]
    status: str | None = None


class ModelFusion:
    """Beliefs from the multi-edge model: one forward pass over the sample's elements and measured edges.

    The pass with no edge (a sample's prior, which its first decision needs) is kept per bundle, elements and
    fractions (``PRIORS_KEPT`` of them): :meth:`prepare_prior` makes it while a sample's first run measures."""

    PRIORS_KEPT = 256

    def __init__(self, models=None):
        self.models = models
        self._priors: OrderedDict[tuple, dict] = OrderedDict()

    @property
    def registry(self):
        return self.models if self.models is not None else default_registry()

    def covered(self, metals: Sequence[str]) -> set[str]:
        """Metals whose edge some XANES bundle covers."""
        cards = [c for c in self.registry.cards() if c.kind == "xanes"]
        return {m for m in metals if any(c.covers(m) for c in cards)}

    def predictor(self, metals: Sequence[str]):
        """The narrowest predictor covering all ``metals`` together (None when none does)."""
        if not metals:
            return None
        try:
            return self.registry.predictor_for_edges("xanes", list(metals))
        except (PredictorError, KeyError):
            return None

    def beliefs(self, elements: Sequence[str], fractions, metals: Sequence[str], edges: Mapping[str, EdgeInput],
                calibration: EdgeCalibration, *, known=None) -> tuple[dict[str, MetalBelief], str | None]:
        """metal -> belief, and the bundle id used (None when no model fused the edges). ``known``: the latest
        run analysis's sample-level result (a ``SampleFusion``), used instead of a forward pass when it answered
        this very request."""
        covered = [m for m in metals if m in self.covered(metals)]
        predictor = self.predictor(covered)
        model_tables: dict[str, dict[str, Table]] = {}
        bundle = None
        if predictor is not None and getattr(predictor, "ensemble", None) is not None:
            fed = {m: e for m, e in edges.items() if m in covered and e.window is not None}
            if fractions == COMPOSITION_UNKNOWN:  # as the run analyses ask this bundle with no composition
                fractions = predictor.composition_input(None, elements)[1]
            try:
                model_tables = (_known_tables(known, predictor, elements, fractions, fed)
                                or (self._prior(predictor, elements, fractions) if not fed else None)
                                or _predicted_tables(predictor, elements, fractions, fed))
                bundle = predictor.bundle.id
            except Exception:
                logger.exception("sfn-stream: next-edge fusion failed; falling back to each run's own prediction")
        out = {}
        for metal in metals:
            edge = edges.get(metal)
            if metal in model_tables and all(model_tables[metal].get(t) for t in TASKS):
                kind = "fused" if edge is not None and edge.window is not None else "model_prior"
                out[metal] = MetalBelief(metal, model_tables[metal], f"{kind}:{bundle}")
            elif edge is not None and all(edge.run_tables.get(t) for t in TASKS):
                out[metal] = MetalBelief(metal, dict(edge.run_tables), f"run:{edge.run_uid}")
            else:
                out[metal] = MetalBelief(metal, {t: calibration.prior(metal, t) for t in TASKS}, "class_prior")
        return out, bundle

    def prepare_prior(self, elements: Sequence[str], fractions, metals: Sequence[str]) -> None:
        """Make and keep the sample's no-edge pass, as :meth:`beliefs` would ask for it (nothing when no bundle
        covers its metals)."""
        predictor = self.predictor([m for m in metals if m in self.covered(metals)])
        if predictor is not None and getattr(predictor, "ensemble", None) is not None:
            self._prior(predictor, elements, fractions)

    def _prior(self, predictor, elements: Sequence[str], fractions) -> dict:
        key = (predictor.bundle.id, tuple(elements),
               fractions if isinstance(fractions, str) else tuple(sorted((fractions or {}).items())))
        tables = self._priors.get(key)
        if tables is None:
            tables = self._priors[key] = _predicted_tables(predictor, elements, fractions, {})
            while len(self._priors) > self.PRIORS_KEPT:
                self._priors.popitem(last=False)
        self._priors.move_to_end(key)
        return tables


def _predicted_tables(predictor, elements: Sequence[str], fractions, fed: Mapping[str, EdgeInput]) -> dict:
    """metal -> task -> class table: one forward pass of the multi-edge model over the fed edges."""
    spectra = {m: (np.asarray(e.window, np.float32), float(e.e0_shift)) for m, e in fed.items()}
    raw = predictor.ensemble.predict(list(elements), spectra, fractions)
    return {m: {t: _table(v[t]) for t in TASKS if t in v} for m, v in raw["per_element"].items()}


def _known_tables(known, predictor, elements: Sequence[str], fractions, fed: Mapping[str, EdgeInput]) -> dict | None:
    """The class tables of ``known`` (a run analysis's ``SampleFusion``) when it answered exactly the request
    :func:`_predicted_tables` would make: same bundle, elements in the same order, fractions, and edges (run,
    window values, E0 shift). A forward pass would then give the same numbers; else None."""
    if known is None or not known.prediction.usable or known.prediction.bundle_id != predictor.bundle.id:
        return None
    inputs = known.prediction.inputs
    if list(inputs.get("elements") or ()) != list(elements) or inputs.get("fractions") != fractions:
        return None
    known_edges = {edge.absorber: edge for edge in known.edges}
    if known_edges.keys() != fed.keys() or not all(_same_edge(known_edges[m], e) for m, e in fed.items()):
        return None
    return {m: {t: _table(v[t]) for t in TASKS if t in v} for m, v in known.prediction.per_element.items()}


def _same_edge(measured, edge: EdgeInput) -> bool:
    """Whether a fused edge (a ``MeasuredEdge``) is the agent's edge: same run, window and E0 shift."""
    window = measured.window
    return (measured.run_uid == edge.run_uid and float(window.e0_shift) == edge.e0_shift
            and np.array_equal(np.asarray(window.mu, float), edge.window))


# -- the decision -------------------------------------------------------------------------------------
@dataclass
class Candidate:
    edge: str
    measured: bool
    covered: bool
    expected_bits: float = 0.0
    cost_seconds: float = 0.0
    score: float = 0.0  # expected bits per hour of beamtime
    worth: bool = False
    chosen: bool = False
    reason: str = ""

    def row(self) -> dict[str, Any]:
        return {"edge": self.edge, "edge_energy": float(k_edge_energy(self.edge)), "measured": self.measured,
                "covered": self.covered, "expected_bits": round(self.expected_bits, 4),
                "cost_seconds": round(self.cost_seconds, 1), "score_bits_per_hour": round(self.score, 4),
                "worth": self.worth, "chosen": self.chosen, "reason": self.reason}


@dataclass
class Decision:
    next_edge: str | None
    done: bool
    reason: str
    confidence: float  # the least confident of every metal's oxidation state and CN
    candidates: list[Candidate]
    beliefs: dict[str, MetalBelief]
    bundle_id: str | None = None

    @property
    def chosen(self) -> Candidate | None:
        return next((c for c in self.candidates if c.chosen), None)


def decide(metals: Sequence[str], beliefs: Mapping[str, MetalBelief], measured: Sequence[str], covered: set[str],
           calibration: EdgeCalibration, options: NextEdgeOptions, *, from_energy: float | None = None,
           bundle_id: str | None = None) -> Decision:
    """Score every edge not yet measured, choose the best one worth its cost, or say done (and why).

    Expected value of an edge: for each task, the calibrated entropy of the metal's belief now minus that
    expected once its edge is in (the validation accuracy with the edge), plus the cross effect on the
    other unmeasured metals; per hour of beamtime. Before any edge, the best covered edge is chosen whatever
    the stopping rule says (a sample is measured at one edge at least); after it, the agent is done when
    every metal is confident enough or no open edge is worth its cost.
    """
    measured_set = set(measured)
    rule = options.stopping(calibration)
    confidence = min((beliefs[m].confidence(t, calibration) for m in metals for t in TASKS), default=1.0)
    cross = calibration.cross_remaining if calibration.cross_remaining is not None else 1.0
    candidates = []
    for metal in metals:
        candidate = Candidate(metal, metal in measured_set, metal in covered)
        if candidate.measured:
            candidate.reason = "measured"
        elif not candidate.covered:
            candidate.reason = f"no XANES model covers the {metal} K edge: measuring it predicts nothing"
        else:
            candidate.expected_bits = _expected_bits(metal, metals, beliefs, measured_set, calibration, cross)
            candidate.cost_seconds = options.cost.seconds(metal, from_energy)
            candidate.score = candidate.expected_bits / (candidate.cost_seconds / 3600.0)
            candidate.worth = candidate.score >= rule["min_bits_per_hour"]
            candidate.reason = "worth its cost" if candidate.worth else "expected gain below min_bits_per_hour"
        candidates.append(candidate)
    open_ = [c for c in candidates if not c.measured]
    worth = [c for c in open_ if c.worth]
    first = not measured_set and [c for c in open_ if c.covered]
    if first:  # the first edge is always measured: the stopping rule was fitted on what an edge adds to one
        worth = first
    if not open_:
        done, reason = True, "every 3d-metal edge of the sample is measured"
    elif first:
        done, reason = False, ""
    elif confidence >= rule["target_confidence"]:
        done, reason = True, f"every oxidation state and CN reached confidence {rule['target_confidence']:g}"
    elif not worth:
        best = max(open_, key=lambda c: c.score)
        done, reason = True, (f"no remaining edge is worth its cost: the best, {best.edge}, would give "
                              f"{best.score:.1f} bits/h < {rule['min_bits_per_hour']:g}")
    else:
        done, reason = False, ""
    next_edge = None
    if not done:
        best = max(worth, key=lambda c: c.score)
        best.chosen = True
        next_edge = best.edge
        reason = (f"{'first edge, ' if first else ''}{best.edge}: {best.expected_bits:.2f} bits expected in "
                  f"{best.cost_seconds / 60:.1f} min")
    return Decision(next_edge, done, reason, confidence, candidates, dict(beliefs), bundle_id)


def _expected_bits(metal: str, metals: Sequence[str], beliefs: Mapping[str, MetalBelief], measured: set[str],
                   calibration: EdgeCalibration, cross: float) -> float:
    own = 0.0
    for task in TASKS:
        n_classes = max(len(beliefs[metal].tables.get(task) or {}), 2)
        now = calibrated_entropy(beliefs[metal].confidence(task, calibration), n_classes)
        after = calibrated_entropy(calibration.expected_accuracy(metal, task, "edge"), n_classes)
        own += max(0.0, now - after)
    others = 0.0
    for other in metals:
        if other != metal and other not in measured:
            for task in TASKS:
                n_classes = max(len(beliefs[other].tables.get(task) or {}), 2)
                others += calibrated_entropy(beliefs[other].confidence(task, calibration), n_classes)
    return own + (1 - cross) * others


# -- one sample ---------------------------------------------------------------------------------------
@dataclass
class SampleState:
    """Everything the agent holds for one sample."""

    sample: str
    elements: list[str] = field(default_factory=list)
    fractions: dict[str, float] | None = None
    edges: dict[str, EdgeInput] = field(default_factory=dict)  # latest usable run per metal
    runs: OrderedDict[str, dict] = field(default_factory=OrderedDict)  # uid -> ingested row
    xrd_uid: str | None = None
    crystal_systems: dict[str, float] | None = None
    last_energy: float | None = None
    structure_keys: set = field(default_factory=set)
    fused: Any = None  # the latest XANES run's sample-level result (a SampleFusion), reused when it fits
    composition_given: bool = False  # the sample's elements came from metadata, not only from measured edges

    @property
    def metals(self) -> list[str]:
        return sorted((e for e in self.elements if e in METALS_3D), key=METALS_3D.index)

    def add_elements(self, spec, *, given: bool = True) -> None:
        """Add elements (a list or formula); ``given``: they come from the sample's metadata, not a measured edge."""
        try:
            elements, fractions = parse_elements(spec)
        except ValueError:
            return
        self.composition_given = self.composition_given or given
        self.elements.extend(e for e in elements if e not in self.elements)
        if fractions and self.fractions is None:
            self.fractions = dict(fractions)


class SampleAgent:
    """The agent's reasoning over one sample, without Bluesky: ingest edges, decide."""

    def __init__(self, options: NextEdgeOptions | None = None, calibration: EdgeCalibration | None = None):
        self.options = options or NextEdgeOptions()
        self.calibration = calibration or EdgeCalibration.shipped()
        self.fusion = ModelFusion(self.options.models)

    def decide(self, state: SampleState) -> Decision:
        metals = state.metals
        # A sample known only from its measured edges is asked as the run analyses ask it (no composition), not as
        # the pure metal(s)
        fractions = state.fractions if state.composition_given else COMPOSITION_UNKNOWN
        beliefs, bundle = self.fusion.beliefs(state.elements, fractions, metals, state.edges, self.calibration,
                                              known=state.fused)
        return decide(metals, beliefs, list(state.edges), self.fusion.covered(metals), self.calibration,
                      self.options, from_energy=state.last_energy, bundle_id=bundle)


# -- the consumer -------------------------------------------------------------------------------------
class NextEdgeAgent(BaseConsumer):
    """After-stop consumer: a decision run after every XANES / PXRD run of a sample (``decisions``: decision
    run uid -> stop summary; ``latest``: sample -> its latest :class:`Decision`)."""

    name = NEXT_EDGE_CONSUMER

    def __init__(self, options: NextEdgeOptions | None = None, calibration: EdgeCalibration | None = None):
        super().__init__()
        self.agent = SampleAgent(options, calibration)
        self.options = self.agent.options
        self.samples: OrderedDict[str, SampleState] = OrderedDict()
        self.decisions: OrderedDict[str, dict] = OrderedDict()
        self.latest: dict[str, Decision] = {}
        self.run_samples: dict[str, str] = {}  # source run uid -> sample
        self.structure = StructureConsumer(self.options.structure) if self.options.structure is not None else None

    def bind(self, emit, *, metadata_key: str, keep: int) -> None:
        super().bind(emit, metadata_key=metadata_key, keep=keep)
        if self.structure is not None:
            self.structure.bind(emit, metadata_key=metadata_key, keep=keep)

    def run_started(self, run: StartedRun) -> None:
        """A sample's first run (its PXRD, usually): make the no-edge pass its first decision needs now, while
        the run measures, so that the suggestion after the stop waits for no forward pass."""
        sample = run.metadata.get("sample")
        if sample in (None, ""):
            return
        state = self.samples.get(str(sample))
        if state is not None and state.edges:
            return  # its later runs' decisions reuse their own analysis's fused pass
        probe = SampleState(str(sample), list(state.elements) if state else [], state.fractions if state else None)
        probe.add_elements(run.metadata.get("elements") or run.metadata.get("composition"))
        if probe.metals:
            self.agent.fusion.prepare_prior(probe.elements, probe.fractions, probe.metals)

    def run_finished(self, run: FinishedRun) -> None:
        if self.structure is not None:
            self.structure.run_finished(run)
        state = self.ingest(run)
        if state is not None:
            self.write_decision(state, trigger_run=run.uid)

    def ingest(self, run: FinishedRun) -> SampleState | None:
        """Add a finished XANES or PXRD run to its sample's state (None for runs the agent does not use)."""
        if run.kind not in ("xanes", "xrd") or run.uid in self.run_samples:
            return None  # a run handed over again (replayed, or a second stop) is decided on once
        sample = run.metadata.get("sample")
        if sample in (None, ""):
            return None
        sample = str(sample)
        state = self.samples.get(sample) or SampleState(sample)
        state.add_elements(run.metadata.get("elements") or run.metadata.get("composition"))
        summary = run.summary or {}
        if run.kind == "xanes" and summary.get("absorber"):
            state.add_elements([summary["absorber"]], given=False)
        if not state.metals:
            logger.info("sfn-stream: sample %s: no 3d metal among its elements (give sfn.composition)", sample)
            return None
        self.samples[sample] = state
        self.samples.move_to_end(sample)
        while len(self.samples) > self.keep:
            self.samples.popitem(last=False)
        self.run_samples[run.uid] = sample
        if run.kind == "xanes":
            self._ingest_xanes(state, run, summary)
        else:
            self._ingest_xrd(state, run, summary)
        return state

    def _ingest_xanes(self, state: SampleState, run: FinishedRun, summary: Mapping[str, Any]) -> None:
        absorber, status = summary.get("absorber"), summary.get("status")
        prediction = getattr(run.analysis, "prediction", None)
        per_element = prediction.per_element.get(absorber, {}) if prediction is not None and absorber else {}
        tables = {t: _table(per_element[t]) for t in TASKS if t in per_element}
        window = getattr(run.analysis, "window", None)
        usable = status in _USABLE and absorber in METALS_3D
        if usable:
            mu = np.asarray(window.mu, float) if window is not None and window.usable else None
            e0_shift = float(window.e0_shift) if mu is not None else 0.0
            state.edges[absorber] = EdgeInput(run.uid, absorber, mu, e0_shift, tables, status)
            state.last_energy = k_edge_energy(absorber)
        fused = getattr(run.analysis, "sample_fusion", None)
        if fused is not None:
            state.fused = fused
        state.runs[run.uid] = {"run_uid": run.uid, "kind": "xanes", "edge": absorber or "", "status": status or "",
                               "used": bool(usable), **_top_fields(tables)}

    def _ingest_xrd(self, state: SampleState, run: FinishedRun, summary: Mapping[str, Any]) -> None:
        probabilities = None
        if run.analysis is not None and hasattr(run.analysis, "crystal_system_probabilities"):
            probabilities = run.analysis.crystal_system_probabilities()
        if probabilities:
            state.xrd_uid, state.crystal_systems = run.uid, dict(probabilities)
        row = {"run_uid": run.uid, "kind": "xrd", "edge": "", "status": summary.get("status") or "",
               "used": bool(probabilities), **_top_fields({})}
        if probabilities:
            best = max(probabilities, key=probabilities.get)
            row.update(crystal_system=best, crystal_system_confidence=round(float(probabilities[best]), 4))
        state.runs[run.uid] = row

    # -- a decision run ---------------------------------------------------------------------------------
    def decide(self, sample: str) -> Decision:
        """The decision for a sample the agent holds (KeyError if it holds none)."""
        return self.agent.decide(self.samples[sample])

    def write_decision(self, state: SampleState, *, trigger_run: str | None = None) -> str:
        """Decide for ``state``'s sample, run structure inference when due, and write the decision run."""
        started = time.perf_counter()
        decision = self.agent.decide(state)
        self.latest[state.sample] = decision
        decided_at = time.time()  # the suggestion is ready here; structure inference may follow
        decision_seconds = time.perf_counter() - started
        structure_run = self._maybe_infer_structure(state, decision)
        key = self.metadata_key
        source_runs = list(state.runs)
        md = {"kind": NEXT_EDGE_KIND, "sample": state.sample, "trigger_run": trigger_run, "source_runs": source_runs,
              "elements": list(state.elements), "metals": state.metals,
              "options": self.options.describe(self.agent.calibration),
              "calibration": self.agent.calibration.provenance}
        bundle = compose_run(metadata=json_safe({"plan_name": NEXT_EDGE_PLAN, "sample": state.sample,
                                                 "source_runs": source_runs, "elements": list(state.elements),
                                                 key: md}))
        uid = bundle.start_doc["uid"]
        self.emit("start", bundle.start_doc)
        streams = DerivedStreams(bundle.compose_descriptor, self.emit, validate=True)
        for row in state.runs.values():
            streams.write(INGESTED_STREAM, row)
        for candidate in decision.candidates:
            streams.write(CANDIDATES_STREAM, candidate.row())
        for metal in state.metals:
            streams.write(POSTERIOR_STREAM, _belief_row(decision.beliefs[metal], self.agent.calibration))
        summary = run_summary(NEXT_EDGE_KIND, state.sample, **decision_summary(decision, state, self.agent.calibration),
                              structure_run=structure_run, source_runs=source_runs,
                              decision_ms=round(decision_seconds * 1000, 2), decided_at=decided_at,
                              seconds=round(time.perf_counter() - started, 3), software=f"sfn-stream {__version__}")
        stop = stop_with_summary(bundle.compose_stop(exit_status="success"), summary, key, streams.event_counts())
        self.emit("stop", stop)
        self.decisions[uid] = stop[key]
        self.stats.record(uid, time.perf_counter() - started)
        while len(self.decisions) > self.keep:
            self.decisions.popitem(last=False)
        return uid

    def _maybe_infer_structure(self, state: SampleState, decision: Decision) -> str | None:
        """Structure inference from the sample's XANES runs and its PXRD run, once the oxidation states
        and the crystal system are confident enough (once per combination of runs)."""
        if self.structure is None or state.xrd_uid is None or not state.crystal_systems or not state.edges:
            return None
        oxidation = min(decision.beliefs[m].confidence("oxidation_state", self.agent.calibration)
                        for m in state.metals)
        crystal = max(state.crystal_systems.values())
        if oxidation < self.options.structure_confidence or crystal < self.options.crystal_system_confidence:
            return None
        key = (frozenset(e.run_uid for e in state.edges.values()), state.xrd_uid)
        if key in state.structure_keys:
            return None
        state.structure_keys.add(key)
        uids = [e.run_uid for e in state.edges.values()] + [state.xrd_uid]
        try:
            return self.structure.infer(uids, sample=state.sample, elements=state.elements)
        except Exception:
            logger.exception("sfn-stream: structure inference for sample %s could not start", state.sample)
            return None


def decision_summary(decision: Decision, state: SampleState, calibration: EdgeCalibration) -> dict[str, Any]:
    """The queryable part of a decision run's stop summary."""
    chosen = decision.chosen
    crystal, crystal_p = None, None
    if state.crystal_systems:
        crystal = max(state.crystal_systems, key=state.crystal_systems.get)
        crystal_p = round(float(state.crystal_systems[crystal]), 4)
    return {"status": "ok", "next_edge": decision.next_edge or "", "done": decision.done, "reason": decision.reason,
            "confidence": round(decision.confidence, 4),
            "expected_bits": round(chosen.expected_bits, 4) if chosen else 0.0,
            "cost_seconds": round(chosen.cost_seconds, 1) if chosen else 0.0,
            "edges_measured": [m for m in state.metals if m in state.edges],
            "edges_remaining": [m for m in state.metals if m not in state.edges],
            "crystal_system": crystal, "crystal_system_confidence": crystal_p, "bundle_id": decision.bundle_id,
            "calibration_bundle": calibration.provenance.get("bundle_id"),
            "species": [_species(decision.beliefs[m]) for m in state.metals],
            "metal_confidence": {m: {t: round(decision.beliefs[m].confidence(t, calibration), 4) for t in TASKS}
                                 for m in state.metals}}


def _belief_row(belief: MetalBelief, calibration: EdgeCalibration) -> dict[str, Any]:
    row: dict[str, Any] = {"metal": belief.metal, "source": belief.source}
    for task in TASKS:
        label, p = belief.top(task)
        row[task] = int(label) if label is not None else -1
        row[f"{task}_probability"] = round(p, 4)
        row[f"{task}_confidence"] = round(belief.confidence(task, calibration), 4)
        row[f"{task}_entropy_bits"] = round(belief.entropy(task), 4)
        row[f"{task}_probabilities"] = json.dumps({str(k): round(v, 4) for k, v in (belief.tables.get(task) or {}).items()
                                                   if v >= 1e-4})
    return row


def _species(belief: MetalBelief) -> str:
    state, _ = belief.top("oxidation_state")
    return f"{belief.metal}{int(state)}+" if state not in (None, 0) else belief.metal


def _top_fields(tables: Mapping[str, Table]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for task in TASKS:
        table = tables.get(task) or {}
        label = max(table, key=table.get) if table else None
        out[task] = int(label) if label is not None else -1
        out[f"{task}_confidence"] = round(float(table[label]), 4) if label is not None else math.nan
    out["crystal_system"], out["crystal_system_confidence"] = "", math.nan
    return out


def _table(prediction) -> Table:
    """A class table from a ClassPrediction or a {'classes', 'probabilities'} mapping."""
    if prediction is None:
        return {}
    if isinstance(prediction, Mapping):
        pairs = zip(prediction["classes"], prediction["probabilities"])
    else:
        pairs = prediction.probabilities.items()
    out = {}
    for label, p in pairs:
        value, prob = _class_value(label), float(p)
        if math.isfinite(prob):
            out[value] = prob
    return out


def _class_value(label):
    try:
        return int(label)
    except (TypeError, ValueError):
        return label


register_consumer(NEXT_EDGE_CONSUMER, NextEdgeAgent)
