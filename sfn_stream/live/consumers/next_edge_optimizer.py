"""The next-edge agent as a bluesky-adaptive 1.0 optimizer: ``suggest`` / ``ingest`` (``Optimizer``) and
``should_stop`` (``SupportsStoppingCriteria``), for ``OptimizationProblem`` + ``optimize``.

    agent = NextEdgeAgent(NextEdgeOptions(...))
    plugin = SfnPlugin(make_tiled_writer(client), consumers=[agent])
    optimizer = NextEdgeOptimizer(agent, sample="S-042", composition="Fe2CuO4", wait=plugin.flush)
    problem = OptimizationProblem(optimizer=optimizer, actuators=[mono], sensors=[xas],
                                  evaluation_function=optimizer.evaluate, acquisition_plan=my_edge_plan)
    RE(optimize(problem, iterations=None))      # until the agent says done

A suggestion is ``{"_id", "edge", "edge_energy"}``; the acquisition plan measures that edge as a XANES run
of the sample (``sfn.sample``, ``sfn.composition``) and returns its uid(s). The plugin's agent sees the
run stop and writes its decision run; ``evaluate`` waits for the plugin (``wait``), then reads that
decision: the outcome ``{"_id", "edge", "confidence", "done", "edges_measured"}``. The optimizer holds no
reasoning of its own: the decisions in Tiled are the ones it acts on. bluesky-adaptive's protocols are
structural, so this module does not import it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sfn_stream.core.spectra import k_edge_energy

from .next_edge import Decision, NextEdgeAgent, SampleState

logger = logging.getLogger(__name__)


class NextEdgeOptimizer:
    """Drives one sample's edges through a :class:`NextEdgeAgent` that the plugin feeds."""

    def __init__(self, agent: NextEdgeAgent, *, sample: str, composition: str | None = None,
                 first_edge: str | None = None, wait: Callable[[float], bool] | None = None,
                 wait_seconds: float = 120.0, max_edges: int | None = None,
                 progress: Callable[[str], None] | None = print):
        self.agent, self.sample, self.composition = agent, sample, composition
        self.first_edge, self.wait, self.wait_seconds = first_edge, wait, wait_seconds
        self.max_edges, self.progress = max_edges, progress
        self.history: list[tuple[Mapping, Mapping]] = []  # (suggestion, outcome)
        self._suggested = 0
        self._last: Decision | None = None

    # -- the Optimizer protocol ---------------------------------------------------------------------
    def suggest(self, num_points: int | None = None) -> Sequence[Mapping]:
        """The next edge (one: edges are measured one at a time, each decision uses the previous edge)."""
        decision = self.decision()
        if self._suggested == 0 and self.first_edge:
            edge = self.first_edge
        elif decision.next_edge is not None:
            edge = decision.next_edge
        else:  # asked although done (the first step always measures): the best-scoring open edge
            open_ = [c for c in decision.candidates if not c.measured and c.covered] or \
                    [c for c in decision.candidates if not c.measured]
            if not open_:
                raise RuntimeError(f"sample {self.sample}: every edge is measured, nothing to suggest")
            edge = max(open_, key=lambda c: c.score).edge
        self._suggested += 1
        return [{"_id": f"{self.sample}:{edge}:{self._suggested}", "edge": edge,
                 "edge_energy": float(k_edge_energy(edge))}]

    def ingest(self, points: Sequence[Mapping]) -> None:
        for point in points:
            self.history.append(({"edge": point.get("edge")}, dict(point)))

    def should_stop(self) -> tuple[bool, str | None]:
        decision = self._last or self.decision()
        measured = len(self._state().edges) if self._state() is not None else 0
        if self.max_edges is not None and measured >= self.max_edges:
            return True, f"max_edges={self.max_edges} reached"
        return (True, decision.reason) if decision.done else (False, None)

    def get_best_points(self) -> Sequence[tuple[Any, Mapping, Mapping]]:
        """The last step: its suggestion id, suggestion and outcome (the sample's current belief)."""
        if not self.history:
            return []
        suggestion, outcome = self.history[-1]
        return [(outcome.get("_id"), suggestion, outcome)]

    # -- the evaluation function ----------------------------------------------------------------------
    def evaluate(self, uid, suggestions: Sequence[Mapping]) -> Sequence[Mapping]:
        """Wait for the plugin's agent to have seen the acquired run(s); the outcome is its decision."""
        if self.wait is not None and not self.wait(self.wait_seconds):
            logger.warning("sfn-stream: the plugin did not finish the run within %s s", self.wait_seconds)
        decision = self._last = self.decision()
        state = self._state()
        measured = [m for m in state.metals if m in state.edges] if state is not None else []
        if self.progress is not None:
            total = len(state.metals) if state is not None else 0
            after = "done: " + decision.reason if decision.done else f"next {decision.next_edge}"
            self.progress(f"{self.sample}: edges measured {', '.join(measured) or '-'} ({len(measured)}/{total}), "
                          f"confidence {decision.confidence:.2f}; {after}")
        return [{"_id": s["_id"], "edge": s["edge"], "confidence": round(float(decision.confidence), 4),
                 "done": float(decision.done), "edges_measured": float(len(measured))} for s in suggestions]

    # -- helpers ------------------------------------------------------------------------------------
    def _state(self) -> SampleState | None:
        return self.agent.samples.get(self.sample)

    def decision(self) -> Decision:
        """The agent's latest recorded decision for the sample (before any run of it: one from its composition)."""
        latest = self.agent.latest.get(self.sample)
        if latest is not None:
            return latest
        state = self._state()
        if state is None:
            state = SampleState(self.sample)
            state.add_elements(self.composition)
            if not state.metals:
                raise ValueError(f"sample {self.sample}: give its composition (no run of it seen yet)")
        return self.agent.agent.decide(state)
