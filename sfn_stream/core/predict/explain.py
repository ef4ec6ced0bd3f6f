"""Which energy regions of a XANES window drive each prediction: integrated gradients.

Integrated gradients (Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep Networks", ICML 2017):
the attribution of window point i to an output f is ``(x_i - b_i) * mean over the straight path from the
baseline b to the input x of df/dx_i``. The attributions add up to ``f(x) - f(b)`` ("completeness"), which
:func:`explain_windows` checks and reports as ``completeness_gap``.

Outputs explained, per ensemble member and then averaged over members (integrated gradients are linear in
f, so this is the attribution of the members' mean output):

* oxidation state and CN of each 3d metal the prediction answers for: the calibrated (temperature-scaled)
  log-probability of the class the ensemble predicts;
* density: the predicted mean (g/cm3).

Only the spectrum windows are attributed; the composition and the edge shift E0 - E_ref (a separate input
of the network) stay as given along the path.

Regions, relative to each window's E0 (conventional K-edge bounds, fixed so that figures compare):
pre-edge E < E0 - 5 eV (1s->3d peaks), edge E0 - 5 .. E0 + 5 eV (the rise), white line E0 + 5 .. E0 + 20 eV
(the main peak after the rise), post-edge E > E0 + 20 eV (first multiple-scattering oscillations).
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sfn_stream.core.serialize import json_safe

from ._predictors import PredictorError

METHOD = "integrated_gradients"
REFERENCE = "Sundararajan, Taly & Yan, Axiomatic Attribution for Deep Networks, ICML 2017 (arXiv:1703.01365)"
DEFAULT_STEPS = 64
# Region name -> (from, to) in eV relative to E0; None is open (the window's end).
REGIONS: dict[str, tuple[float | None, float | None]] = {
    "pre_edge": (None, -5.0),
    "edge": (-5.0, 5.0),
    "white_line": (5.0, 20.0),
    "post_edge": (20.0, None),
}
REGION_LABELS = {"pre_edge": "pre-edge", "edge": "edge", "white_line": "white line", "post_edge": "post-edge"}
ELEMENT_TASKS = ("oxidation_state", "coordination_number")
DENSITY = "density"
STEP_WIDTH_EV = 1.0  # Gaussian sigma of the baseline's edge step: about a 3d K-edge core-hole width


def region_masks(window) -> dict[str, np.ndarray]:
    """Boolean mask of each region over the window's points."""
    relative = np.asarray(window.energy) - float(window.e0)
    masks = {}
    for name, (low, high) in REGIONS.items():
        above = relative >= low if low is not None else np.ones_like(relative, dtype=bool)
        below = relative < high if high is not None else np.ones_like(relative, dtype=bool)
        masks[name] = above & below
    return masks


def region_bounds(window) -> dict[str, list[float] | None]:
    """Each region's [first, last] energy (eV) inside the window; None where the window misses it."""
    energy = np.asarray(window.energy)
    return {name: [float(energy[mask][0]), float(energy[mask][-1])] if mask.any() else None
            for name, mask in region_masks(window).items()}


def edge_step_baseline(window, width: float = STEP_WIDTH_EV) -> np.ndarray:
    """The attribution baseline: a Gaussian-smoothed unit step at the window's own E0.

    Why this baseline: it is what a normalised XANES window looks like with no features at all (0 below
    the edge, 1 above, rising where this spectrum rises), so the attributions explain the spectral shape
    (pre-edge peaks, white line, oscillations) rather than the mere presence of a normalised edge, as an
    all-zero baseline (a spectrum no preprocessing can produce) would.
    """
    relative = np.asarray(window.energy, dtype=float) - float(window.e0)
    return np.array([0.5 * (1.0 + math.erf(r / (math.sqrt(2.0) * width))) for r in relative], dtype=np.float32)


@dataclass
class TaskAttribution:
    """The attribution of one output to every window point (each absorber's window)."""

    target: str  # "Fe oxidation_state", "density"
    task: str
    element: str | None
    top_class: Any  # the predicted class (None for density)
    probability: float | None  # its ensemble probability (None for density)
    output: str  # what f is, in words
    f_input: float
    f_baseline: float
    attributions: dict[str, np.ndarray]  # absorber -> (L,)
    region_sums: dict[str, dict[str, float]] = field(default_factory=dict)
    region_shares: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def attribution_sum(self) -> float:
        return float(sum(a.sum() for a in self.attributions.values()))

    @property
    def completeness_gap(self) -> float:
        """sum(attributions) - (f(x) - f(baseline)); near 0 when the path integral is resolved."""
        return self.attribution_sum - (self.f_input - self.f_baseline)

    @property
    def relative_gap(self) -> float:
        delta = abs(self.f_input - self.f_baseline)
        return abs(self.completeness_gap) / delta if delta > 1e-12 else math.nan

    def to_dict(self, arrays: bool = False) -> dict[str, Any]:
        out = {"target": self.target, "task": self.task, "element": self.element, "top_class": self.top_class,
               "probability": self.probability, "output": self.output, "f_input": self.f_input,
               "f_baseline": self.f_baseline, "attribution_sum": self.attribution_sum,
               "completeness_gap": self.completeness_gap, "relative_gap": self.relative_gap,
               "region_sums": self.region_sums, "region_shares": self.region_shares}
        if arrays:
            out["attributions"] = {absorber: values.tolist() for absorber, values in self.attributions.items()}
        return out


@dataclass
class Explanation:
    """Attributions of every explained output of one sample's prediction."""

    bundle_id: str
    windows: list  # XanesWindow, the first is the run's own edge
    baselines: dict[str, np.ndarray]
    elements: list[str]
    fractions: dict[str, float] | str | None  # str: the unknown-composition marker
    tasks: list[TaskAttribution]
    steps: int
    n_members: int

    def to_dict(self, arrays: bool = False) -> dict[str, Any]:
        """Plain JSON: bundle, method, baseline, regions and preprocessing of each window, and per task
        the top class, f(input), f(baseline), completeness gap and region sums/shares."""
        windows = {}
        for window in self.windows:
            entry = {"preprocessing": window.to_dict(), "region_bounds_ev": region_bounds(window)}
            if arrays:
                entry.update(energy=window.energy.tolist(), mu=window.mu.tolist(),
                             baseline=self.baselines[window.absorber].tolist())
            windows[window.absorber] = entry
        return json_safe({
            "bundle_id": self.bundle_id,
            "method": METHOD,
            "reference": REFERENCE,
            "steps": self.steps,
            "ensemble_members": self.n_members,
            "baseline": {"kind": "edge_step", "width_ev": STEP_WIDTH_EV,
                         "description": "Gaussian-smoothed unit step at each window's E0 (a normalised edge "
                                        "without features); composition and E0 - E_ref held as given"},
            "regions": {name: {"from_ev": low, "to_ev": high, "relative_to": "E0", "label": REGION_LABELS[name]}
                        for name, (low, high) in REGIONS.items()},
            "region_share": "sum of |attribution| in the region / sum of |attribution| over every window",
            "inputs": {"elements": self.elements, "fractions": self.fractions,
                       "edges": [w.absorber for w in self.windows]},
            "windows": windows,
            "tasks": [task.to_dict(arrays) for task in self.tasks],
        })


def explain_windows(predictor, windows: Sequence, composition, *, steps: int = DEFAULT_STEPS) -> Explanation:
    """Integrated gradients of a :class:`XanesPredictor`'s outputs for one sample (one window per edge,
    the first is the run's own). Raises :class:`PredictorError` for an unusable window or a request the
    bundle cannot serve."""
    if steps < 2:
        raise ValueError(f"steps must be at least 2, got {steps}")
    windows = list(windows)
    elements, fractions = predictor.composition_input(composition, [w.absorber for w in windows])
    for window in windows:
        if not window.usable:
            raise PredictorError(f"the {window.absorber} window cannot be explained: {window.reason}")
        predictor.check_request(window.absorber, elements)
    if len({w.absorber for w in windows}) != len(windows):
        raise PredictorError(f"one window per absorber, got {[w.absorber for w in windows]}")
    ensemble = predictor.ensemble
    spectra = {w.absorber: (w.mu, w.e0_shift) for w in windows}
    prediction = ensemble.predict(elements, spectra, fractions)
    baselines = {w.absorber: edge_step_baseline(w) for w in windows}
    tasks = _integrated_gradients(ensemble, elements, fractions, windows, baselines, prediction, steps)
    for task in tasks:
        _fill_regions(task, windows)
    return Explanation(bundle_id=predictor.bundle.id, windows=windows, baselines=baselines, elements=elements,
                       fractions=fractions, tasks=tasks, steps=steps, n_members=len(ensemble.members))


# --- the path integral ---------------------------------------------------------------------------


def _integrated_gradients(ensemble, elements, fractions, windows, baselines, prediction, steps) -> list[TaskAttribution]:
    import torch

    from sfn_stream.core.networks import encode_compounds

    batch = encode_compounds([(elements, {w.absorber: (w.mu, w.e0_shift) for w in windows}, fractions)],
                             spectrum_length=ensemble.spectrum_length, supported_absorbers=ensemble.supported_absorbers,
                             unknown_fractions=ensemble.unknown_fractions)
    slot = {symbol: j for j, symbol in enumerate(elements)}
    target = batch.spectra.clone()
    start = torch.zeros_like(target)
    for window in windows:
        start[0, slot[window.absorber]] = torch.from_numpy(baselines[window.absorber])
    alphas = torch.linspace(0.0, 1.0, steps + 1)
    # Trapezoid weights of the path integral; alpha 0 and 1 also give f(baseline) and f(input).
    weights = torch.full((steps + 1,), 1.0 / steps)
    weights[0] = weights[-1] = 0.5 / steps
    path = (start + alphas[:, None, None, None] * (target - start))[:, 0]  # (S+1, N, L)
    repeat = steps + 1
    z, fractions_in = batch.z.expand(repeat, -1), batch.fractions.expand(repeat, -1)
    e0_shift, has_spectrum = batch.e0_shift.expand(repeat, -1), batch.has_spectrum.expand(repeat, -1)
    outputs = _outputs(ensemble, prediction, elements)
    grads = {name: torch.zeros_like(path) for name, _ in outputs}
    f_input = {name: 0.0 for name, _ in outputs}
    f_baseline = {name: 0.0 for name, _ in outputs}
    for member in _eval_members(ensemble):
        spectra = path.clone().requires_grad_(True)
        raw = member(z, fractions_in, spectra, e0_shift, has_spectrum)
        values = {name: pick(raw, member) for name, pick in outputs}
        for k, (name, _) in enumerate(outputs):
            # The path points are independent inputs: the gradient of their sum is each point's gradient.
            (gradient,) = torch.autograd.grad(values[name].sum(), spectra, retain_graph=k < len(outputs) - 1)
            grads[name] += gradient / len(ensemble.members)
            f_input[name] += float(values[name][-1].detach()) / len(ensemble.members)
            f_baseline[name] += float(values[name][0].detach()) / len(ensemble.members)
    difference = (target - start)[0]
    results = []
    for name, _ in outputs:
        attribution = (difference * (grads[name] * weights[:, None, None]).sum(0)).numpy()
        per_window = {w.absorber: attribution[slot[w.absorber]].astype(float) for w in windows}
        results.append(_task(name, prediction, f_input[name], f_baseline[name], per_window))
    return results


def _outputs(ensemble, prediction, elements):
    """(name, function of a member's raw output -> (batch,) values) for every explained output."""
    import torch

    outputs = []
    slot = {symbol: j for j, symbol in enumerate(elements)}
    for element, tasks in prediction["per_element"].items():
        for task in ELEMENT_TASKS:
            if task not in tasks:
                continue
            best = int(np.argmax(tasks[task]["probabilities"]))
            temperature = ensemble.temperatures.get(task, 1.0)

            def log_probability(raw, member, task=task, j=slot[element], best=best, t=temperature):
                return torch.log_softmax(raw["element_logits"][task][:, j] / t, dim=-1)[:, best]

            outputs.append((f"{element} {task}", log_probability))
    names = list(ensemble.stacked.compound_regressions)
    if DENSITY in names:
        k = names.index(DENSITY)

        def density(raw, member, k=k):
            return raw["compound_mean"][:, k] * member.target_std[k] + member.target_mean[k]

        outputs.append((DENSITY, density))
    return outputs


def _task(name, prediction, f_input, f_baseline, attributions) -> TaskAttribution:
    if name == DENSITY:
        return TaskAttribution(target=name, task=DENSITY, element=None, top_class=None, probability=None,
                               output="ensemble mean density (g/cm3)", f_input=f_input, f_baseline=f_baseline,
                               attributions=attributions)
    element, task = name.split(" ", 1)
    entry = prediction["per_element"][element][task]
    best = int(np.argmax(entry["probabilities"]))
    return TaskAttribution(target=name, task=task, element=element, top_class=entry["classes"][best],
                           probability=float(entry["probabilities"][best]),
                           output="members' mean calibrated log-probability of the predicted class",
                           f_input=f_input, f_baseline=f_baseline, attributions=attributions)


def _fill_regions(task: TaskAttribution, windows) -> None:
    total = sum(float(np.abs(a).sum()) for a in task.attributions.values()) or 1.0
    for window in windows:
        values = task.attributions[window.absorber]
        masks = region_masks(window)
        task.region_sums[window.absorber] = {name: float(values[mask].sum()) for name, mask in masks.items()}
        task.region_shares[window.absorber] = {name: float(np.abs(values[mask]).sum()) / total
                                               for name, mask in masks.items()}


_MEMBERS: dict[str, list] = {}
_MEMBERS_LOCK = threading.Lock()


def _eval_members(ensemble) -> list:
    """Copies of the ensemble's members in eval mode (no dropout), made once per bundle; the loaded
    members are shared with the predictors and stay untouched."""
    with _MEMBERS_LOCK:
        key = ensemble.bundle_id or str(id(ensemble))
        if key not in _MEMBERS:
            members = [copy.deepcopy(member).eval() for member in ensemble.members]
            for member in members:
                member.requires_grad_(False)
            _MEMBERS[key] = members
        return _MEMBERS[key]
