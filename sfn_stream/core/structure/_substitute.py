"""Element substitution into a template: which template element becomes which target element.

Template and target have the same anonymous formula, so a mapping is a bijection between
elements of equal count. Among those we take the one with the best
- substitution prior: pymatgen's data-mined ionic substitution probabilities (Hautier et al. 2011,
  Inorg. Chem. 50, 656), P(target species | template species), relative to the target's own
  self-substitution probability, geometric mean over elements;
- oxidation-state agreement (template mean state vs the target's; opposite signs are excluded);
- ionic-radius agreement: Shannon (1976) radii at the template site's coordination number.
The cell is then rescaled by the reference-lattice-scaling rule of pymatgen's RLSVolumePredictor
(length ratio = sum r_new n^(1/3) / sum r_old n^(1/3)), with the radii above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from itertools import permutations, product

RADIUS_SIGMA = 0.12  # ln(r_target / r_template) that halves... (Gaussian width of the radius term)
OXIDATION_WEIGHT = 0.5  # per unit of |mean state difference|
MIN_LENGTH_SCALE, MAX_LENGTH_SCALE = 0.75, 1.35
_ROMAN = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "VI", 7: "VII", 8: "VIII", 9: "IX", 10: "X", 11: "XI", 12: "XII", 14: "XIV"}


SUBSTITUTION_ALPHA = -5.0  # lambda of never-observed pairs (pymatgen's default)


def species_label(element: str, state: int) -> str:
    """'Ca2+', 'O2-', 'Na1+' as in pymatgen's lambda.json."""
    return f"{element}{abs(state)}{'+' if state >= 0 else '-'}"


@lru_cache(maxsize=1)
def _lambda_table() -> dict[frozenset, float]:
    """Pair -> lambda of Hautier et al. (read directly: SubstitutionProbability() takes seconds to build)."""
    import json
    import os

    import pymatgen.core.structure_prediction as prediction

    with open(os.path.join(os.path.dirname(prediction.__file__), "data", "lambda.json")) as fh:
        rows = json.load(fh)
    return {frozenset((a, b)): float(value) for a, b, value in rows}


@lru_cache(maxsize=8192)
def relative_substitution_probability(template: str, template_state: int, target: str, target_state: int) -> float:
    """cond_prob(template -> target) / cond_prob(target -> target) = exp(lambda(t, e) - lambda(e, e)), capped at 1.

    pymatgen's SubstitutionProbability.cond_prob(s1, s2) = exp(lambda(s1, s2)) / p(s2); p(s2) cancels.
    """
    t, e = species_label(template, template_state), species_label(target, target_state)
    if t == e:
        return 1.0
    table = _lambda_table()
    lam = table.get(frozenset((t, e)), SUBSTITUTION_ALPHA)
    lam_self = table.get(frozenset((e,)), SUBSTITUTION_ALPHA)
    return float(min(math.exp(lam - lam_self), 1.0))


@lru_cache(maxsize=4096)
def ionic_radius(element: str, state: int, cn: int | None) -> float:
    """Shannon radius at ``cn`` (nearest tabulated CN, high spin), else pymatgen's ionic/atomic radius (A)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen warns for every missing radius and spin state
        radius = _ionic_radius(element, state, cn)
    if not radius or radius < 0.1:  # Shannon's H+ radii are negative; nothing is smaller than 0.1 A
        from pymatgen.core import Element

        el = Element(element)
        radius = float(el.atomic_radius or el.atomic_radius_calculated or 1.0)
    return radius


def _ionic_radius(element: str, state: int, cn: int | None) -> float:
    from pymatgen.core import Element, Species

    try:
        species = Species(element, state)
        table = species.get_shannon_radius  # raises when the ion is not tabulated
        if cn is not None:
            for candidate in sorted(_ROMAN, key=lambda c: (abs(c - cn), c)):
                for spin in ("High Spin", ""):
                    try:
                        return float(table(_ROMAN[candidate], spin=spin))
                    except Exception:
                        continue
        if species.ionic_radius:
            return float(species.ionic_radius)
    except Exception:
        pass
    el = Element(element)
    return float(el.atomic_radius or el.atomic_radius_calculated or 1.5)


@dataclass(frozen=True)
class ElementMapping:
    pairs: tuple[tuple[str, str], ...]  # (template element, target element)
    log_substitution: float  # mean log relative substitution probability
    radius_mismatch: float  # RMS of ln(r_target / r_template) over elements
    oxidation_mismatch: float  # mean |state difference|
    length_scale: float  # cell length factor (RLS)

    @property
    def log_prior(self) -> float:
        n = len(self.pairs)
        return (
            self.log_substitution * n
            - n * self.radius_mismatch**2 / (2 * RADIUS_SIGMA**2)
            - OXIDATION_WEIGHT * self.oxidation_mismatch * n
        )

    def to_dict(self) -> dict:
        return {
            "pairs": {t: e for t, e in self.pairs},
            "substitution_probability": math.exp(self.log_substitution),
            "radius_mismatch": self.radius_mismatch,
            "oxidation_mismatch": self.oxidation_mismatch,
            "length_scale": self.length_scale,
        }


def _site_cn(pairs) -> int | None:
    if not pairs:
        return None
    return max(pairs, key=lambda p: p[1])[0]


def element_mappings(entry, target_counts: dict[str, int], target_states: dict[str, float]) -> list[ElementMapping]:
    """All count-preserving bijections template -> target that keep charge signs, best first."""
    groups: dict[int, list[int]] = {}
    for i, c in enumerate(entry.counts):
        groups.setdefault(c, []).append(i)
    targets_by_count: dict[int, list[str]] = {}
    for el, c in target_counts.items():
        targets_by_count.setdefault(c, []).append(el)
    if sorted(groups) != sorted(targets_by_count) or any(len(groups[c]) != len(targets_by_count[c]) for c in groups):
        return []
    per_group = [[list(zip(groups[c], perm)) for perm in permutations(targets_by_count[c])] for c in sorted(groups)]
    out = []
    for combo in product(*per_group):
        assignment = dict(pair for group in combo for pair in group)
        mapping = _score_mapping(entry, assignment, target_counts, target_states)
        if mapping is not None:
            out.append(mapping)
    out.sort(key=lambda m: -m.log_prior)
    return out


def _score_mapping(entry, assignment: dict[int, str], target_counts, target_states) -> ElementMapping | None:
    log_sub, radius_sq, ox_diff = 0.0, 0.0, 0.0
    num_new = num_old = 0.0
    pairs = []
    for i, target in sorted(assignment.items()):
        template_el, t_state = entry.elements[i], entry.oxidation[i]
        e_state = target_states[target]
        if t_state is not None and t_state * e_state < 0:
            return None  # a cation site cannot take an anion and vice versa
        cn = _site_cn(entry.cn[i]) if entry.cn[i] else None
        if t_state is None:
            ox_diff += 1.0
            r_old = ionic_radius(template_el, int(round(e_state)), cn)
            log_sub += math.log(relative_substitution_probability(template_el, int(round(e_state)), target, int(round(e_state))))
        else:
            ox_diff += abs(t_state - e_state)
            r_old = ionic_radius(template_el, int(round(t_state)), cn)
            log_sub += math.log(relative_substitution_probability(template_el, int(round(t_state)), target, int(round(e_state))))
        r_new = ionic_radius(target, int(round(e_state)), cn)
        radius_sq += math.log(r_new / r_old) ** 2
        weight = target_counts[target] ** (1 / 3)
        num_new += r_new * weight
        num_old += r_old * weight
        pairs.append((template_el, target))
    n = len(pairs)
    scale = min(max(num_new / num_old, MIN_LENGTH_SCALE), MAX_LENGTH_SCALE) if num_old > 0 else 1.0
    return ElementMapping(tuple(pairs), log_sub / n, math.sqrt(radius_sq / n), ox_diff / n, scale)


def substituted_structure(template_structure, mapping: ElementMapping):
    """The template with its elements replaced and its cell rescaled (RLS)."""
    structure = template_structure.copy()
    structure.replace_species({t: e for t, e in mapping.pairs if t != e})
    if abs(mapping.length_scale - 1) > 1e-9:
        structure.scale_lattice(structure.volume * mapping.length_scale**3)
    return structure
