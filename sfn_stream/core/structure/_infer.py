"""Structure inference: formulas x templates -> substituted candidates -> ranked by the measured PXRD.

Score (natural-log units, higher is better), with every term reported as a named component:

    score = similarity / XRD_TEMPERATURE          profile agreement after the cell/zero-shift fit
          + ln P(formula)                         oxidation-state tables (charge balance)
          + ln P(crystal system)                  PXRD classifier (or uniform)
          + ln [P(space group | system) / base rate]   PXRD search-match top 5, floored (when given; _space_group.py)
          + ln P(CN)                              template site CNs under the CN tables
          + SUBSTITUTION_WEIGHT * ln P(substitution)   substitution / radius / charge plausibility
          - FORMULA_SIZE_WEIGHT * ln N(atoms per formula unit)   simpler formulas first

``probability`` is the softmax of the scores over all fitted candidates: a relative confidence
among the candidates considered, not the chance that the sample is any of them. Relaxation and the
XANES check change some scores; the softmax is then taken again.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Collection, Sequence

import numpy as np

from ._formulas import formula_prior
from ._index import TemplateIndex, template_index
from ._pattern import (
    LAB_WAVELENGTH,
    PatternFit,
    coarse_scale,
    measured_profile,
    reflections,
    refine_fit,
    scaled_structure,
)
from ._request import InferenceRequest, ResolvedRequest, resolve_request
from ._sources import DEFAULT_SOURCES
from ._space_group import space_group_base_rates, space_group_log_priors
from ._substitute import element_mappings, substituted_structure

XRD_TEMPERATURE = 0.02  # similarity difference of 0.02 = one e-fold in odds
COARSE_TEMPERATURE = 0.03
SUBSTITUTION_WEIGHT = 0.5
# With true oxidation states every charge-balanced stoichiometry has prior 1 (CaMnAlO4, Ca2MnAlO5, ...),
# and a larger formula unit fits a pattern more easily (more reflections, more freedom). An Occam
# prior against formula-unit size, chosen on the dev split of the structure benchmark (mean top-1
# over strata 0.708 -> 0.725; better on both halves of a two-fold split; 1, 3, 5, 10, 20, 30 tried).
FORMULA_SIZE_WEIGHT = 10.0
CN_FLOOR = 0.05  # P(CN) never below this: CN predictions err, and templates' CrystalNN too
CN_UNKNOWN = 0.2
MIN_SYSTEM_PROBABILITY = 0.02
MAX_SYSTEMS = 4
PER_GROUP = 2  # templates kept per (formula, space group) before the pattern match
PER_FORMULA = 10
MAX_COARSE = 100  # candidates whose isotropic cell scale is searched
MAX_REFINED = 15  # candidates refined (free axes + zero shift) and scored


@dataclass
class Candidate:
    rank: int
    formula: str
    crystal_system: str
    spacegroup_symbol: str
    spacegroup_number: int
    score: float
    probability: float
    components: dict[str, float]
    template_id: str
    template_source: str
    template_label: str
    template_formula: str
    substitution: dict[str, Any]
    fit: dict[str, Any]
    structure: Any = field(repr=False)  # pymatgen Structure: substituted, cell fitted to the pattern

    def to_cif(self, symprec: float | None = 0.1) -> str:
        """CIF text (symmetrised with ``symprec``; None writes P1)."""
        from pymatgen.io.cif import CifWriter

        try:
            return str(CifWriter(self.structure, symprec=symprec))
        except Exception:  # symmetry finding can fail on a strained cell: P1 is always possible
            return str(CifWriter(self.structure))

    def to_dict(self, structure: bool = True) -> dict[str, Any]:
        out = {
            "rank": self.rank, "formula": self.formula, "crystal_system": self.crystal_system,
            "spacegroup_symbol": self.spacegroup_symbol, "spacegroup_number": self.spacegroup_number,
            "score": self.score, "probability": self.probability, "components": dict(self.components),
            "template": {"id": self.template_id, "source": self.template_source, "label": self.template_label,
                         "formula": self.template_formula},
            "substitution": self.substitution, "fit": self.fit,
            "lattice": dict(zip(("a", "b", "c", "alpha", "beta", "gamma"),
                                [float(v) for v in (*self.structure.lattice.abc, *self.structure.lattice.angles)])),
        }
        if structure:
            out["cif"] = self.to_cif()
        return out


@dataclass
class InferenceResult:
    candidates: list[Candidate]
    reason: str | None
    request: dict[str, Any]
    formulas: list[dict[str, Any]]  # charge-balanced formulas that had templates, best prior first
    crystal_systems: dict[str, float]  # systems searched with their probabilities
    sources: dict[str, int]  # templates per usable source
    skipped_sources: dict[str, str]  # unusable source -> why
    counts: dict[str, int]
    seconds: dict[str, float]
    notes: list[str] = field(default_factory=list)
    xrd: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None

    def to_dict(self, structures: bool = True) -> dict[str, Any]:
        return {
            "candidates": [c.to_dict(structures) for c in self.candidates],
            "reason": self.reason, "request": self.request, "formulas": self.formulas,
            "crystal_systems": self.crystal_systems, "sources": self.sources,
            "skipped_sources": self.skipped_sources, "counts": self.counts, "seconds": self.seconds,
            "notes": self.notes, "xrd": self.xrd,
        }


@dataclass
class _Pending:
    index: int  # template index
    formula: Any
    mapping: Any
    log_prior: float
    parts: dict[str, float]
    sg: int = 0
    structure: Any = None
    refl: Any = None
    coarse: tuple[float, float] | None = None
    fit: PatternFit | None = None


def _systems(resolved: ResolvedRequest) -> dict[str, float]:
    ranked = sorted(resolved.crystal_systems.items(), key=lambda kv: -kv[1])
    kept = [(cs, p) for cs, p in ranked if p >= MIN_SYSTEM_PROBABILITY][:MAX_SYSTEMS]
    if len(resolved.crystal_systems) == 7 and len(set(resolved.crystal_systems.values())) == 1:
        kept = ranked  # uniform: no information, search all seven
    return dict(kept or ranked[:1])


def _formulas_for_key(key: str, elements: Sequence[str], states) -> list:
    counts = [int(c) for c in key.split("-")]
    found = {}
    for perm in set(_distinct_permutations(counts)):
        formula = formula_prior(list(zip(elements, perm)), states)
        if formula is not None:
            found[perm] = formula
    return list(found.values())


def _distinct_permutations(counts):
    from itertools import permutations

    return set(permutations(counts))


def _cn_probability(entry, mapping, coordination) -> float:
    p = 1.0
    for template_el, target in mapping.pairs:
        table = coordination.get(target)
        if not table:
            continue
        pairs = entry.cn[entry.elements.index(template_el)]
        if not pairs:
            p *= CN_UNKNOWN
            continue
        total = sum(m for _, m in pairs)
        p *= max(sum(m * table.get(cn, 0.0) for cn, m in pairs) / total, CN_FLOOR)
    return p


def infer_structures(
    request: InferenceRequest,
    *,
    sources: Sequence[Any] | None = None,
    top: int = 5,
    xanes_check: bool = False,
    progress: bool = False,
    exclude: Collection[str] = (),
    index: TemplateIndex | None = None,
    cache_dir: str | None = None,
    relax: int = 0,
) -> InferenceResult:
    """Ranked candidate structures for ``request`` (see the module docstring for the score).

    ``sources``: template sources (names, folders or source objects; default amcsd, aflow, robocrys).
    ``exclude``: template ids left out (leave-one-out evaluation). ``index``: a prebuilt index
    instead of ``sources``. ``relax``: relax this many of the best candidates with CHGNet and refit
    their patterns before the XANES check (``chgnet`` needed; see ``_relax.py``). Raises
    ``StructureInputError`` for malformed requests; a request that simply has no answer returns an
    empty result with ``reason``.
    """
    from sfn_stream.core.spectra import preprocess_xrd

    started = time.perf_counter()
    seconds: dict[str, float] = {}
    resolved = resolve_request(request)
    notes = []
    if resolved.defaulted:
        notes.append("oxidation states from ICSD occurrence statistics for " + ", ".join(resolved.defaulted))
    systems = _systems(resolved)
    xrd = request.xrd
    pattern = preprocess_xrd(xrd.x, xrd.intensity, axis=xrd.axis, wavelength=xrd.wavelength)
    wavelength = xrd.wavelength if xrd.wavelength else LAB_WAVELENGTH
    if xrd.axis == "q" and not xrd.wavelength:
        notes.append(f"no wavelength given: Lorentz-polarisation factors at {LAB_WAVELENGTH} A (Cu K-alpha1)")
    skipped: dict[str, str] = {}
    if index is None:
        index, skipped = template_index(list(sources) if sources is not None else list(DEFAULT_SOURCES),
                                        directory=cache_dir, progress=progress)
    seconds["index"] = time.perf_counter() - started
    source_counts = dict(defaultdict(int))
    for e in index.entries:
        source_counts[e.source] = source_counts.get(e.source, 0) + 1

    def result(candidates, reason, formulas=(), counts=None):
        seconds["total"] = time.perf_counter() - started
        return InferenceResult(
            candidates, reason, request.to_dict(), list(formulas), systems, source_counts, skipped,
            counts or {}, {k: round(v, 3) for k, v in seconds.items()}, notes, pattern.to_dict(),
        )

    if not pattern.usable:
        return result([], f"the PXRD pattern is not usable: {pattern.reason}")
    if len(index) == 0:
        why = "; ".join(f"{k}: {v}" for k, v in skipped.items()) or "no sources given"
        return result([], f"no template source is usable ({why})")

    # formulas x templates
    t0 = time.perf_counter()
    excluded = set(exclude)
    sg_log_priors = _space_group_terms(resolved, index)
    pending: list[_Pending] = []
    formulas_seen: dict[str, Any] = {}
    n = len(resolved.elements)
    for key in index.anonymous_keys(n):
        formulas = _formulas_for_key(key, resolved.elements, resolved.oxidation_states)
        if not formulas:
            continue
        for system, p_system in systems.items():
            members = [i for i in index.lookup(key, system) if index.entries[i].template_id not in excluded]
            if not members:
                continue
            for formula in formulas:
                formulas_seen[formula.reduced_formula] = formula
                counts, states = dict(formula.counts), dict(formula.mean_states)
                size_log_prior = -FORMULA_SIZE_WEIGHT * math.log(sum(counts.values()))
                for i in members:
                    entry = index.entries[i]
                    mappings = element_mappings(entry, counts, states)
                    if not mappings:
                        continue
                    mapping = mappings[0]
                    p_cn = _cn_probability(entry, mapping, resolved.coordination)
                    parts = {
                        "formula_prior": formula.prior, "crystal_system_prior": p_system, "cn_probability": p_cn,
                        "substitution_probability": math.exp(mapping.log_substitution),
                        "substitution_log_prior": mapping.log_prior, "formula_size_log_prior": size_log_prior,
                    }
                    log_prior = (math.log(formula.prior) + math.log(p_system) + math.log(p_cn)
                                 + SUBSTITUTION_WEIGHT * mapping.log_prior + size_log_prior)
                    if sg_log_priors is not None:  # also ranks templates for pruning (_prune keeps by prior)
                        parts["space_group_log_prior"] = sg_log_priors.get(entry.spacegroup_number, 0.0)
                        log_prior += parts["space_group_log_prior"]
                    pending.append(_Pending(i, formula, mapping, log_prior, parts, entry.spacegroup_number))
    seconds["retrieve"] = time.perf_counter() - t0
    formula_list = sorted(formulas_seen.values(), key=lambda f: -f.prior)
    counts = {"templates": len(index), "formulas_with_templates": len(formula_list), "candidates": len(pending)}
    if not pending:
        systems_text = ", ".join(systems)
        return result([], (
            f"no template among {len(index)} ({', '.join(source_counts) or 'none'}) has the anonymous formula and "
            f"charge pattern of a charge-balanced {'-'.join(resolved.elements)} compound in the crystal systems "
            f"searched ({systems_text}); add templates (a CIF folder) or widen the crystal systems"
        ), [], counts)

    # keep the most plausible templates per (formula, space group) and per formula
    pending = _prune(pending, index)
    counts["after_pruning"] = len(pending)
    measured = measured_profile(pattern)
    t0 = time.perf_counter()
    for item in pending:
        entry = index.entries[item.index]
        try:
            item.structure = substituted_structure(index.structure(item.index), item.mapping)
            item.refl = reflections(item.structure, entry.crystal_system, q_max=float(measured.q[-1]) * 1.1)
            item.coarse = coarse_scale(item.refl, measured, wavelength)
        except Exception as err:  # one bad template must not stop the query
            notes.append(f"{entry.template_id}: skipped ({type(err).__name__}: {err})")
            item.coarse = None
    scored = [p for p in pending if p.coarse is not None]
    scored.sort(key=lambda p: -(p.log_prior + p.coarse[1] / COARSE_TEMPERATURE))
    seconds["coarse"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    refined = _refine_diverse(scored, measured, wavelength)
    seconds["refine"] = time.perf_counter() - t0
    counts["scored"], counts["refined"] = len(scored), len(refined)

    final = []
    for item in refined:
        sim = item.fit.similarity
        score = sim / XRD_TEMPERATURE + item.log_prior
        final.append((score, item))
    final.sort(key=lambda t: -t[0])
    candidates, seen, others = [], set(), []
    for score, item in final:
        entry = index.entries[item.index]
        key = (item.formula.reduced_formula, entry.spacegroup_number)
        if key in seen or len(candidates) >= top:
            others.append(score)
            continue
        seen.add(key)
        candidates.append(_candidate(len(candidates) + 1, score, 0.0, item, entry))
    if relax and candidates:
        from ._relax import relax_candidates

        t0 = time.perf_counter()
        notes.extend(relax_candidates(candidates, measured, wavelength, XRD_TEMPERATURE, count=relax))
        seconds["relax"] = time.perf_counter() - t0
    if xanes_check and candidates:
        from ._xanes_check import add_xanes_agreement

        t0 = time.perf_counter()
        notes.extend(add_xanes_agreement(candidates, request))
        seconds["xanes_check"] = time.perf_counter() - t0
    _set_probabilities(candidates, others)
    return result(candidates, None, [f.to_dict() for f in formula_list], counts)


def _space_group_terms(resolved: ResolvedRequest, index: TemplateIndex) -> dict[int, float] | None:
    """Space group -> its log-prior term, relative to its base rate among the templates; None without a
    space-group table (the score is then exactly what it was before the prior existed)."""
    if not resolved.space_groups:
        return None
    base_rates = space_group_base_rates(e.spacegroup_number for e in index.entries)
    return space_group_log_priors(resolved.space_groups, base_rates)


def _set_probabilities(candidates: list[Candidate], other_scores: Sequence[float]) -> None:
    """Softmax over the candidates' final scores (after relaxation or the XANES check, if any) and the
    scores of the refined candidates not returned."""
    if not candidates:
        return
    scores = np.array([c.score for c in candidates] + list(other_scores))
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    for candidate, prob in zip(candidates, probs):
        candidate.probability = float(prob)


def _prune(pending: list[_Pending], index: TemplateIndex) -> list[_Pending]:
    pending = sorted(pending, key=lambda p: -p.log_prior)
    per_group, per_formula, kept = defaultdict(int), defaultdict(int), []
    for item in pending:
        entry = index.entries[item.index]
        formula = item.formula.reduced_formula
        group = (formula, entry.spacegroup_number)
        if per_group[group] >= PER_GROUP or per_formula[formula] >= PER_FORMULA:
            continue
        per_group[group] += 1
        per_formula[formula] += 1
        kept.append(item)
    return kept[:MAX_COARSE]


def _refine_diverse(scored: list[_Pending], measured, wavelength: float) -> list[_Pending]:
    """Refine the best coarse candidates, one per (formula, space group)."""
    chosen, per_key = [], defaultdict(int)
    for item in scored:
        key = (item.formula.reduced_formula, item.sg)
        if per_key[key] >= 1:
            continue
        per_key[key] += 1
        item.fit = refine_fit(item.refl, measured, wavelength, item.coarse[0])
        chosen.append(item)
        if len(chosen) >= MAX_REFINED:
            break
    return chosen


def _candidate(rank: int, score: float, prob: float, item: _Pending, entry) -> Candidate:
    fit = item.fit
    structure = scaled_structure(item.structure, fit.axis_scales)
    components = {
        "xrd_similarity": fit.similarity,
        "xrd_term": fit.similarity / XRD_TEMPERATURE,
        **{k: v for k, v in item.parts.items()},
        "coarse_similarity": item.coarse[1],
    }
    return Candidate(
        rank, item.formula.reduced_formula, entry.crystal_system, entry.spacegroup_symbol, entry.spacegroup_number,
        float(score), prob, components, entry.template_id, entry.source, entry.label, entry.formula,
        item.mapping.to_dict(), {**fit.to_dict(), "isotropic_scale": item.coarse[0]}, structure,
    )
