"""Label audit: every oxidation state and coordination number checked by a second method.

Oxidation states come from bond valences (``BVAnalyzer``, :mod:`sfn_stream.core.chemistry`); the
audit checks them against the most probable charge-balanced assignment of the composition
(``Composition.oxi_state_guesses``) and, for AMCSD minerals, of the formula the CIF states. CN
comes from CrystalNN; the audit counts neighbours inside sum-of-radii bond-length cutoffs as well.

After the per-material rules, :func:`duplicate_disagreements` lists labels that differ between
refinements of one phase (reduced formula and space group); each keeps its own.

Rules, first match wins (``RULES`` says each in a line; docs/corpus.md has the table):

- ``implausible_geometry``: a 3d-metal site with a neighbour closer than ``IMPLAUSIBLE`` x the
  covalent radii sum (AMCSD 18900 TiNi, Ti-Ni 1.41 A), an O closer than ``MIN_METAL_OXYGEN``
  (AMCSD 17965 V2O3, V-O 1.47 A), or beside anions a metal as close as its nearest anion (AMCSD 17667
  carrollite) is a misread structure: no labels.
- Bonding class, from the composition (:func:`bonding_class`). A formal oxidation state is defined
  only where the metal's partners take a conventional anion charge: O, halogens, S/Se/Te
  (``ionic``), or N/C when the 3d metals are not in excess of them (``nitride``: TiN Ti3+, CrN
  Cr3+, TiC Ti4+, cyanides). The pure element is 0. Intermetallics, borides/silicides/germanides
  (B, Si, Ge networks), pnictides without a chalcogen (P/As/Sb: NiAs and MnP types, pnictogen
  pairs) and metal-rich nitrides/carbides (Fe4N, Fe3N, Mn3GaC) get ``None``: undefined, not guessed.
- ``incomplete_structure``: the stated formula has elements the sites lack (H of a hydrate left out
  of an X-ray refinement); the stated formula's charge balance is taken.
- ``cu_soft_anion``: Cu with only S/Se/Te/pnictogen partners is Cu+ (lautite CuAsS: bond valences
  say Cu3+, inflated by short covalent bonds); the other metals follow the charge balance with Cu+.
- ``rare_state``: for AMCSD minerals, a bond-valence state rarer than ``RARE_STATE`` in the ICSD
  statistics yields to the stated formula's charge balance (ulvospinel Ti2+/Fe3+ -> Ti4+/Fe2+);
  ``site_misfit`` then withholds the CN of a metal whose site's bond-valence sum misses the adopted
  state by more than ``MISFIT`` (a model that puts Ti on the spinel's tetrahedral site).
- ``bv_kept``: any other disagreement keeps the bond valence (it sees the bond lengths; the
  charge-balance guess only ranks states by ICSD frequency) and is recorded.

CN: ``crystalnn_zero`` takes the cutoff count where CrystalNN finds no neighbour (K3Co(NO2)6,
LaCr(CN)6.5H2O); ``metallic_cn``: in compounds without a formal oxidation state the CN is withheld
when CrystalNN finds fewer than ``METALLIC_CN_MIN`` neighbours (the lone N of Fe4N) and the cutoff
count, metal shells included, disagrees; other disagreements keep CrystalNN (``crystalnn_kept``).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

from sfn_stream.core import paths

from ._structures import CORPUS_METALS, CorpusMaterial

AUDIT_VERSION = "audit2"  # audit2: M-O floor, cation-pair rule, duplicate cross-check
AUDIT_DIR = paths.DATA_DIR / "corpus_audit"
AUDIT_TABLE = "label_audit.csv"

IONIC_ANIONS = frozenset({"O", "F", "Cl", "Br", "I", "S", "Se", "Te"})
SOFT_ANIONS = frozenset({"S", "Se", "Te"})
NETWORK_FORMERS = frozenset({"B", "Si", "Ge"})
PNICTOGENS = frozenset({"P", "As", "Sb"})  # pymatgen counts Bi as a metal
CUTOFF_SCALE_COVALENT = 1.20  # x sum of Cordero covalent radii (metal - non-metal pairs)
CUTOFF_SCALE_METALLIC = 1.10  # x sum of metallic radii, metal-metal pairs
METALLIC_CN_MIN = 4  # below this in a metallic compound, CrystalNN saw only the few non-metal neighbours
MAX_GUESS_ATOMS = 60  # charge-balance enumeration on larger reduced formulas takes minutes
RARE_STATE = 0.05  # ICSD occurrence below which a bond-valence state yields to a common charge balance
MISFIT = 0.25  # relative bond-valence-sum misfit of a site that is not the cation's own
IMPLAUSIBLE = 0.70  # x sum of covalent radii: a closer neighbour means a misread structure
# no 3d-metal - O bond is shorter (vanadyl V=O 1.54-1.59 A, Cr(VI)-O 1.55 A, Mn(VII)-O 1.59 A): AMCSD 17965
# V2O3 and 17966 Cr2O3 with three M-O at 1.47 A are misread corundum cells (CrystalNN then counts 3)
MIN_METAL_OXYGEN = 1.50
# two metals closer than this x their covalent radii sum, and no farther apart than the site's nearest anion,
# beside O, S, Se, Te or halogen neighbours: a misplaced cation site (AMCSD 17667 carrollite: Cu-Co 2.05 A =
# Cu-S 2.05 A); metal-metal bonds in oxides and sulfides (Ti2O3 0.81, Cu(I) pairs 0.91 of the sum) stay above it
CATION_PAIR = 0.78

RULES = {
    "element": "the pure element: 0",
    "intermetallic": "only metals: no formal oxidation state (None)",
    "network": "borides, silicides, germanides (B/Si/Ge networks, no O/halogen/chalcogen): None",
    "pnictide": "pnictides without O/halogen/chalcogen (NiAs/MnP types, pnictogen pairs): None",
    "metal_rich_nitride": "nitrides/carbides with more 3d-metal atoms than N+C (Fe4N, Fe3N, Mn3GaC): None",
    "incomplete_structure": "the stated formula has elements the sites lack: its charge balance is taken",
    "rare_state": f"AMCSD minerals: bond valence gives a state rarer than {RARE_STATE:.0%} in the ICSD (Ti2+, Cu3+, "
                  "Fe+) where the charge balance of the stated formula gives common ones: charge balance taken "
                  "(Materials Project structures are DFT-relaxed: their bond valences stay)",
    "site_misfit": f"the adopted state misses its site's bond-valence sum by more than {MISFIT:.0%}: the model "
                   "puts the cation on a site that is not its own, CN withheld",
    "cu_soft_anion": "Cu with only S/Se/Te/pnictogen partners is Cu+ (Cu(II)/Cu(III) sums there come from short "
                     "covalent bonds); the other metals from the charge balance with Cu+",
    "bv_kept": "bond valence kept (it sees the bond lengths; charge balance ranks by ICSD frequency only)",
    "implausible_geometry": f"a neighbour closer than {IMPLAUSIBLE} x the covalent radii sum (O: {MIN_METAL_OXYGEN} "
                            f"A), or a metal closer than {CATION_PAIR} x the sum and no farther than the site's "
                            "nearest anion: misread structure, oxidation state and CN withheld",
    "crystalnn_zero": "CrystalNN found no neighbour: the cutoff count is taken",
    "metallic_cn": f"no formal oxidation state and CrystalNN below {METALLIC_CN_MIN} (it counts the few non-metal "
                   "neighbours; the all-neighbour count mixes metal shells, often beyond 12): CN withheld",
    "audit_failed": "the audit raised on this structure: the campaign's labels are kept",
    "crystalnn_kept": "CrystalNN kept (it weighs distorted polyhedra; the cutoff is one length per pair)",
    "duplicate_disagreement": "another refinement of the same phase (reduced formula and space group) carries "
                              "another label: each keeps its own (its spectrum comes from its own structure), "
                              "listed for review",
}
FINDING_FIELDS = ("material_id", "source", "name", "formula", "element", "label", "value", "second_method",
                  "second_value", "kept", "changed", "rule", "reason")


@dataclass(frozen=True)
class Finding:
    """One label where the two methods disagree, or that a rule changed: the value kept and why."""

    material_id: str
    source: str
    name: str
    formula: str
    element: str
    label: str  # "oxidation_state" | "coordination_number"
    value: float | None  # the campaign's label (bond valence / CrystalNN)
    second_method: str
    second_value: float | None
    kept: float | None  # the audited label
    changed: bool
    rule: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MaterialAudit:
    labels: dict | None  # the labels record with audited absorbers
    findings: list[Finding]


# --- bonding class ---------------------------------------------------------------------------------


def _is_metal(symbol: str) -> bool:
    from pymatgen.core import Element

    return bool(Element(symbol).is_metal)


def bonding_class(composition) -> str:
    """``element``, ``intermetallic``, ``network``, ``pnictide``, ``metal_rich_nitride``, ``nitride`` or
    ``ionic``: whether a formal oxidation state is defined (the last two) and why not (the others)."""
    amounts = {str(el): float(n) for el, n in composition.get_el_amt_dict().items()}
    elements = set(amounts)
    if len(elements) == 1:
        return "element"
    partners = {el for el in elements if not _is_metal(el)}
    if not partners:
        return "intermetallic"
    if partners & IONIC_ANIONS:
        return "ionic"
    if partners & NETWORK_FORMERS:
        return "network"
    if partners & PNICTOGENS:
        return "pnictide"
    if partners & {"N", "C"}:
        metals_3d = sum(n for el, n in amounts.items() if el in CORPUS_METALS or el == "Sc")
        return "nitride" if metals_3d <= amounts.get("N", 0) + amounts.get("C", 0) + 1e-9 else "metal_rich_nitride"
    return "ionic"  # hydrides and the like: let the checks decide


UNDEFINED_CLASSES = ("intermetallic", "network", "pnictide", "metal_rich_nitride")


# --- second methods --------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def charge_balances(formula: str) -> tuple[dict[str, float], ...]:
    """Charge-balanced oxidation states of ``formula``, most probable first (ICSD statistics); empty
    when there is none or the reduced formula is too large to enumerate."""
    from pymatgen.core import Composition

    composition = Composition(formula)
    if composition.reduced_composition.num_atoms > MAX_GUESS_ATOMS:
        return ()
    try:
        guesses = composition.oxi_state_guesses(max_sites=-MAX_GUESS_ATOMS)
    except ValueError:
        return ()
    return tuple({str(el): float(v) for el, v in guess.items()} for guess in guesses)


def charge_balance(formula: str) -> dict[str, float] | None:
    """The most probable charge-balanced oxidation states of ``formula``, or None."""
    guesses = charge_balances(formula)
    return guesses[0] if guesses else None


_HYDRATE = re.compile(r"[·*]|\.(?=\d*\s*\(?H2O)")
_LEADING_COUNT = re.compile(r"^\s*(\d+(?:\.\d+)?)?\s*(.+?)\s*$")


def parse_stated_formula(text: str):
    """A Composition from a stated formula, hydrates included ("LaCr(CN)6.5H2O" -> LaCr(CN)6(H2O)5);
    None when ``text`` is not a formula (a mineral name)."""
    from pymatgen.core import Composition

    text = (text or "").strip()
    if not text or re.search(r"[a-z]{3,}", text) or not re.fullmatch(r"[A-Za-z0-9().·*\s]+", text):
        return None
    total = None
    try:
        for part in _HYDRATE.split(text):
            count, body = _LEADING_COUNT.match(part).groups()
            piece = Composition(body) * (float(count) if count else 1.0)
            total = piece if total is None else total + piece
    except (ValueError, KeyError, TypeError, AttributeError):  # not a formula after all
        return None
    return total


_FORMULA_SUM = re.compile(r"^_chemical_formula_sum\s+['\"]?([^'\"\n]+)", re.MULTILINE)


def stated_composition(cif_text: str | None, name: str):
    """The formula a source states: the CIF's ``_chemical_formula_sum`` or the name when it is a
    formula, whichever names more elements (hydrate water is often only in the name)."""
    candidates = [parse_stated_formula(t) for t in _FORMULA_SUM.findall(cif_text or "")]
    candidates.append(parse_stated_formula(name))
    candidates = [c for c in candidates if c is not None and c.num_atoms > 0]
    return max(candidates, key=lambda c: len(c.elements), default=None)


def pair_cutoff(a: str, b: str) -> float:
    """Bond-length cutoff (A) of an element pair: 1.10 x the sum of the metallic radii of two metals
    (bcc second shell excluded), else 1.20 x the sum of Cordero covalent radii (second shells of
    oxides and sulfides, beyond 3 A, excluded; Jahn-Teller apical Cu-O beyond 2.4 A too)."""
    from pymatgen.core import Element

    if _is_metal(a) and _is_metal(b):
        ra, rb = Element(a).metallic_radius, Element(b).metallic_radius
        if ra and rb:
            return CUTOFF_SCALE_METALLIC * float(ra + rb)
    return CUTOFF_SCALE_COVALENT * (covalent_radius(a) + covalent_radius(b))


def covalent_radius(symbol: str) -> float:
    from pymatgen.analysis.molecule_structure_comparator import CovalentRadius

    return float(CovalentRadius.radius.get(symbol, 1.5))


def cutoff_cn(structure, index: int, anions_only: bool) -> int:
    """Neighbours of site ``index`` within their pair's cutoff; ``anions_only`` counts non-metals only
    (an ionic compound's coordination polyhedron)."""
    center = structure[index].specie.symbol
    count = 0
    for neighbour in structure.get_neighbors(structure[index], 3.6):
        other = neighbour.specie.symbol
        if anions_only and _is_metal(other):
            continue
        if neighbour.nn_distance <= pair_cutoff(center, other):
            count += 1
    return count


# --- the audit of one material ---------------------------------------------------------------------


def _class(value: float | None) -> int | None:
    return None if value is None else math.floor(value + 0.5)


def _swapped(bv: Mapping[str, float], guess: Mapping[str, float]) -> list[str]:
    """Metals whose bond-valence class differs from the charge balance, when they differ both up and down."""
    deltas = {el: _class(bv[el]) - _class(guess[el]) for el in bv if el in guess}
    differing = [el for el, d in deltas.items() if d != 0]
    signs = {math.copysign(1, deltas[el]) for el in differing}
    return differing if len(differing) >= 2 and len(signs) == 2 else []


def audit_material(material: CorpusMaterial, labels: dict | None, cif_text: str | None = None) -> MaterialAudit:
    """The audited labels of one material (a copy of ``labels`` with each absorber's oxidation state and
    CN decided by the rules above) and every disagreement or change, as :class:`Finding` rows."""
    if not labels or not labels.get("absorbers"):
        return MaterialAudit(labels, [])
    try:
        return _audit_material(material, labels, cif_text)
    except Exception as err:  # noqa: BLE001  one odd structure must not stop a corpus assembly
        reason = f"{RULES['audit_failed']}: {type(err).__name__}: {err}"[:300]
        return MaterialAudit(labels, [Finding(material.material_id, material.source, material.name, material.formula,
                                              element, "oxidation_state", entry.get("oxidation_state_mean"), "audit",
                                              None, entry.get("oxidation_state_mean"), False, "audit_failed", reason)
                                      for element, entry in labels["absorbers"].items()])


def _audit_material(material: CorpusMaterial, labels: dict, cif_text: str | None) -> MaterialAudit:
    import copy

    structure = material.structure
    labels = copy.deepcopy(labels)
    absorbers = labels["absorbers"]
    found: list[Finding] = []

    def finding(element, label, value, second_method, second_value, kept, rule):
        changed = (_class(value) != _class(kept)) if label == "oxidation_state" else (value != kept)
        found.append(Finding(material.material_id, material.source, material.name, material.formula, element,
                             label, value, second_method, second_value, kept, changed, rule, RULES[rule]))

    if implausible_geometry(structure, material.site_groups):
        for element, entry in absorbers.items():
            finding(element, "oxidation_state", entry.get("oxidation_state_mean"), "nearest-neighbour distance",
                    None, None, "implausible_geometry")
            finding(element, "coordination_number", entry.get("cn_mean"), "nearest-neighbour distance", None, None,
                    "implausible_geometry")
            _set_oxidation(entry, None, "withheld_implausible_geometry")
            entry.update(cn_mean=None, cn_class=None, cn_mixed=None, site_cns=None)
        return MaterialAudit(labels, found)
    kind = bonding_class(structure.composition)
    withheld = _audit_oxidation(material, absorbers, kind, cif_text, finding)
    _audit_cn(structure, material, absorbers, kind, withheld, finding)
    return MaterialAudit(labels, found)


def implausible_geometry(structure, site_groups: Mapping[str, Sequence[Sequence[int]]]) -> bool:
    """Whether a 3d-metal site has a neighbour closer than ``IMPLAUSIBLE`` x their covalent radii sum
    (AMCSD 18900 TiNi: Ti-Ni 1.41 A, a misread cell, where CrystalNN then counts 2), or, beside anions, a
    metal neighbour closer than ``CATION_PAIR`` x the sum and as close as its nearest anion (a misplaced
    cation site: AMCSD 17667 carrollite, where CrystalNN then counts 8 around octahedral Co)."""
    for element, groups in site_groups.items():
        for group in groups:
            neighbours = structure.get_neighbors(structure[group[0]], 3.0)
            anion = min((n.nn_distance for n in neighbours if n.specie.symbol in IONIC_ANIONS), default=None)
            for neighbour in neighbours:
                other = neighbour.specie.symbol
                radii = covalent_radius(element) + covalent_radius(other)
                too_short = MIN_METAL_OXYGEN if other == "O" else 0.0
                if neighbour.nn_distance < max(IMPLAUSIBLE * radii, too_short):
                    return True
                if (anion is not None and _is_metal(other) and neighbour.nn_distance < CATION_PAIR * radii
                        and neighbour.nn_distance <= 1.05 * anion):
                    return True
    return False


def _set_oxidation(entry: dict, value: float | None, method: str) -> None:
    entry["oxidation_state_mean"] = value
    entry["oxidation_state_class"] = _class(value)
    entry["oxidation_method"] = method


def _audit_oxidation(material, absorbers: dict, kind: str, cif_text, finding) -> set[str]:
    """Decide each absorber's oxidation state in place; the metals whose CN is withheld."""
    structure = material.structure
    if kind == "element":
        for element, entry in absorbers.items():
            if entry.get("oxidation_state_class") != 0:
                finding(element, "oxidation_state", entry.get("oxidation_state_mean"), "pure element", 0.0, 0.0,
                        "element")
            _set_oxidation(entry, 0.0, "element_zero")
        return set()
    if kind in UNDEFINED_CLASSES:
        for element, entry in absorbers.items():
            if entry.get("oxidation_state_mean") is not None:
                finding(element, "oxidation_state", entry["oxidation_state_mean"], "bonding class", None, None, kind)
            _set_oxidation(entry, None, f"undefined_{kind}")
        return set()
    sites = {el.symbol for el in structure.composition.elements}
    stated = stated_composition(cif_text, material.name) if material.source == "amcsd" else None
    if stated is not None and sites - {el.symbol for el in stated.elements}:
        stated = None  # a formula that does not name every element of the sites is not this structure's
    if stated is not None and {el.symbol for el in stated.elements} - sites:
        _take_stated(absorbers, stated, finding)
        return set()
    bv = {el: e["oxidation_state_mean"] for el, e in absorbers.items()
          if e.get("oxidation_method") == "bvanalyzer" and e.get("oxidation_state_mean") is not None}
    if not bv:
        return set()
    if stated is not None and {el.symbol for el in stated.elements} == sites:
        formula, second = stated.formula, f"charge balance of the stated formula {stated.reduced_formula}"
    else:
        formula, second = structure.composition.formula, "charge balance of the composition"
    guesses = charge_balances(formula)
    if not guesses:
        return set()
    partners = {el for el in sites if not _is_metal(el)}
    if "Cu" in bv and not partners - SOFT_ANIONS - PNICTOGENS:
        return _cu_soft_anion(absorbers, bv, guesses, second, finding)
    guess = guesses[0]
    rare = [el for el, value in bv.items() if rare_state(el, _class(value))]
    if stated is not None and rare and all(not rare_state(el, _class(guess[el])) for el in bv if el in guess):
        changed = [el for el in bv if el in guess and _class(guess[el]) != _class(bv[el])]
        for element in changed:
            finding(element, "oxidation_state", bv[element], second, guess[element], guess[element], "rare_state")
            _set_oxidation(absorbers[element], guess[element], "audit_charge_balance")
        return {el for el in changed if site_misfit(structure, material.site_groups.get(el, []), guess)}
    for element, value in bv.items():
        other = guess.get(element)
        if other is not None and _class(other) != _class(value):
            finding(element, "oxidation_state", value, second, other, value, "bv_kept")
    return set()


def _take_stated(absorbers: dict, stated, finding) -> None:
    guess = charge_balance(stated.formula)
    if guess is None:
        return
    for element, entry in absorbers.items():
        if element not in guess:
            continue
        if _class(guess[element]) != entry.get("oxidation_state_class"):
            finding(element, "oxidation_state", entry.get("oxidation_state_mean"),
                    f"charge balance of the stated formula {stated.reduced_formula}", guess[element], guess[element],
                    "incomplete_structure")
        _set_oxidation(entry, guess[element], "audit_stated_formula")


def _cu_soft_anion(absorbers: dict, bv: dict, guesses, second: str, finding) -> set[str]:
    """Cu+ with S/Se/Te/pnictogen partners only; the other metals from the charge balance with Cu+ (if any)."""
    with_cu1 = next((g for g in guesses if _class(g.get("Cu")) == 1), None)
    for element, value in bv.items():
        target = 1.0 if element == "Cu" else (with_cu1 or {}).get(element, value)
        if _class(target) != _class(value):
            finding(element, "oxidation_state", value, second, (with_cu1 or guesses[0]).get(element), target,
                    "cu_soft_anion")
            _set_oxidation(absorbers[element], target, "audit_cu_soft_anion")
    return set()


def rare_state(element: str, state: int | None) -> bool:
    """Whether ``state`` is rarer than ``RARE_STATE`` among the element's ionic states in the ICSD
    statistics pymatgen's charge balance uses (Ti2+, Cu3+, Ni+, Fe4+)."""
    from pymatgen.core import Composition

    if state is None:
        return False
    if not Composition.oxi_prob:
        Composition("NaCl").oxi_state_guesses()  # loads the table
    counts = {sp.oxi_state: n for sp, n in Composition.oxi_prob.items() if sp.symbol == element and sp.oxi_state}
    total = sum(counts.values())
    return bool(total) and counts.get(state, 0) / total < RARE_STATE


def site_misfit(structure, groups: Sequence[Sequence[int]], states: Mapping[str, float]) -> bool:
    """Whether a site's bond-valence sum misses its adopted state by more than ``MISFIT`` (relative): the
    model puts the cation on a site that is not its own (AMCSD 19931 ulvospinel: Ti4+ on the tetrahedral
    site has a sum of 2.6)."""
    from pymatgen.analysis.bond_valence import calculate_bv_sum

    decorated = structure.copy()
    decorated.add_oxidation_state_by_element({el: float(v) for el, v in states.items()})
    for group in groups:
        site = decorated[group[0]]
        state = float(site.specie.oxi_state)
        if state > 0 and abs(calculate_bv_sum(site, decorated.get_neighbors(site, 3.5)) - state) / state > MISFIT:
            return True
    return False


def _audit_cn(structure, material, absorbers: dict, kind: str, withheld: set[str], finding) -> None:
    import numpy as np

    groups = material.site_groups
    metallic = kind in UNDEFINED_CLASSES or kind == "element"
    for element, entry in absorbers.items():
        site_cns = entry.get("site_cns")
        if element not in groups or site_cns is None or len(site_cns) != len(groups[element]):
            continue
        weights = [len(g) for g in groups[element]]
        cutoffs = [cutoff_cn(structure, g[0], anions_only=not metallic) for g in groups[element]]
        method = "bond-length cutoff (sum of covalent/metallic radii)"
        cn_mean = float(np.average(cutoffs, weights=weights))
        crystalnn = entry.get("cn_mean")
        if element in withheld:
            finding(element, "coordination_number", crystalnn, method, cn_mean, None, "site_misfit")
            entry.update(cn_mean=None, cn_class=None, cn_mixed=None, site_cns=None)
            continue
        if list(cutoffs) == list(site_cns):
            continue
        if metallic and min(site_cns) < METALLIC_CN_MIN:
            finding(element, "coordination_number", crystalnn, method, cn_mean, None, "metallic_cn")
            entry.update(cn_mean=None, cn_class=None, cn_mixed=None, site_cns=None)
            continue
        if min(site_cns) == 0:
            kept, rule = cutoffs, "crystalnn_zero"
        else:
            kept, rule = list(site_cns), "crystalnn_kept"
        kept_mean = float(np.average(kept, weights=weights))
        finding(element, "coordination_number", crystalnn, method, cn_mean, kept_mean, rule)
        entry.update(cn_mean=kept_mean, cn_class=_class(kept_mean), cn_mixed=len(set(kept)) > 1,
                     site_cns=list(kept))


# --- whole corpora ---------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _amcsd():
    from sfn_stream.core.structure.amcsd import amcsd_database

    return amcsd_database()


def amcsd_cif_text(source_id: str) -> str | None:
    """The CIF of an AMCSD id from the shipped database (for its stated formula); None when unreadable."""
    try:
        cif = _amcsd().get_cif(int(source_id))
    except Exception:  # noqa: BLE001  larixite raises many kinds on odd rows; then no stated formula
        return None
    return None if cif is None else cif.ciftext


def audit_materials(materials: Iterable[CorpusMaterial], labels: Mapping[str, dict]) -> tuple[dict, list[Finding]]:
    """Audited labels per material id, and all findings."""
    audited, findings = {}, []
    for material in materials:
        text = amcsd_cif_text(material.source_id) if material.source == "amcsd" else None
        result = audit_material(material, labels.get(material.material_id), text)
        audited[material.material_id] = result.labels
        findings.extend(result.findings)
    return audited, findings


def duplicate_disagreements(material_rows: Sequence[Mapping], absorber_rows: Sequence[Mapping]) -> list[Finding]:
    """Labels that differ between refinements of one phase (same reduced formula and space group number):
    rules that look at one structure at a time cannot see these (carrollite Co2CuS4 in AMCSD 13181 and 17667).
    Each label is kept; the rows say which other materials disagree."""
    from pymatgen.core import Composition

    materials = {r["material_id"]: r for r in material_rows}
    phase_of = {mid: (Composition(r["formula"]).reduced_formula, int(r["space_group_number"]))
                for mid, r in materials.items() if r.get("space_group_number") is not None}
    phases: dict[tuple, dict[str, list]] = {}
    for row in absorber_rows:
        phase = phase_of.get(row["material_id"])
        if phase is not None:
            phases.setdefault(phase, {}).setdefault(row["element"], []).append(row)
    found = []
    for per_element in phases.values():
        for element, rows in per_element.items():
            for label, column in (("oxidation_state", "oxidation_state_class"), ("coordination_number", "cn_class")):
                valued = [r for r in rows if r.get(column) is not None]
                if len({r[column] for r in valued}) < 2:
                    continue
                for row in valued:
                    others = [r for r in valued if r["material_id"] != row["material_id"]]
                    second = Counter(r[column] for r in others).most_common(1)[0][0]
                    material = materials[row["material_id"]]
                    method = "same phase: " + ", ".join(f"{r['material_id']} {_fmt(r[column])}" for r in others)
                    found.append(Finding(row["material_id"], material["source"], material.get("name") or "",
                                         material["formula"], element, label, row[column], method[:200], second,
                                         row[column], False, "duplicate_disagreement",
                                         RULES["duplicate_disagreement"]))
    return found


def audit_summary(findings: Sequence[Finding]) -> dict[str, Any]:
    """Counts: disagreements and changed labels per label and rule, changed (material, metal) rows."""
    per_rule = Counter(f"{f.label}:{f.rule}" for f in findings)
    changed = [f for f in findings if f.changed]
    return {
        "audit_version": AUDIT_VERSION,
        "findings": len(findings),
        "changed_labels": len(changed),
        "changed_oxidation_states": sum(f.label == "oxidation_state" for f in changed),
        "changed_coordination_numbers": sum(f.label == "coordination_number" for f in changed),
        "changed_rows": len({(f.material_id, f.element) for f in changed}),
        "per_rule": dict(sorted(per_rule.items())),
        "changed_per_rule": dict(sorted(Counter(f"{f.label}:{f.rule}" for f in changed).items())),
    }


def write_findings(findings: Sequence[Finding], path) -> None:
    """The committed audit table: one row per finding, sorted, plain CSV (diffs stay readable)."""
    import csv
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = sorted((f.to_dict() for f in findings), key=lambda r: (r["material_id"], r["element"], r["label"]))
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(FINDING_FIELDS), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(v) for k, v in row.items()})


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    return "" if value is None else value


# --- the committed corpus --------------------------------------------------------------------------


def _labels_from_rows(rows) -> dict:
    """A labels record (as the campaign's ``labels`` items hold it) from a material's absorber rows."""
    keys = ("oxidation_state_mean", "oxidation_state_class", "oxidation_method", "cn_mean", "cn_class", "cn_mixed")
    absorbers = {}
    for row in rows:
        entry = {key: _plain(row.get(key)) for key in keys}
        cns = row.get("site_cns")
        entry["site_cns"] = None if cns is None else [int(c) for c in cns]
        absorbers[row["element"]] = entry
    return {"absorbers": absorbers}


def _plain(value):
    """numpy/pandas scalars and NaN as plain Python (None for missing)."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def corpus_structures(material_rows: Sequence[Mapping], progress: bool = False) -> tuple[dict, list[str]]:
    """material id -> structure for a corpus's materials: AMCSD from the shipped database, Materials
    Project ids from ../shared/data/omnixas_cu; the ids whose structure is not available here."""
    from tqdm import tqdm

    from sfn_stream.core.structure.amcsd import iter_amcsd_structures
    from sfn_stream.offline.shared import SharedDataMissing, omnixas_poscars

    by_source: dict[str, list[Mapping]] = {}
    for row in material_rows:
        by_source.setdefault(row["source"], []).append(row)
    structures: dict[str, Any] = {}
    amcsd = {int(r["source_id"]): r["material_id"] for r in by_source.get("amcsd", [])}
    for entry in tqdm(iter_amcsd_structures(sorted(amcsd)), total=len(amcsd), desc="AMCSD structures",
                      disable=not progress, mininterval=5.0):
        if entry.structure is not None:
            structures[amcsd[entry.amcsd_id]] = entry.structure
    try:
        poscars = omnixas_poscars()
    except SharedDataMissing:
        poscars = {}
    from pymatgen.core import Structure

    for row in by_source.get("omnixas", []):
        if row["source_id"] in poscars:
            structures[row["material_id"]] = Structure.from_str(poscars[row["source_id"]], fmt="poscar")
    missing = [r["material_id"] for r in material_rows if r["material_id"] not in structures]
    return structures, missing


def audit_corpus(corpus_dir=None, progress: bool = False, limit: int | None = None) -> dict[str, Any]:
    """Run the audit over a committed corpus (its labels, the structures available here): the summary,
    the findings, and the changed labels."""
    from pathlib import Path

    import pyarrow.parquet as pq
    from tqdm import tqdm

    from ._structures import metal_site_groups

    corpus_dir = Path(corpus_dir or paths.CORPUS_DIR)
    material_rows = pq.read_table(corpus_dir / "materials.parquet",
                                  columns=["material_id", "source", "source_id", "name", "formula"]).to_pylist()
    material_rows = material_rows[:limit] if limit else material_rows
    absorber_rows = pq.read_table(corpus_dir / "absorbers.parquet", columns=[
        "material_id", "element", "site_indices", "oxidation_state_mean", "oxidation_state_class",
        "oxidation_method", "cn_mean", "cn_class", "cn_mixed", "site_cns"]).to_pylist()
    per_material: dict[str, list] = {}
    for row in absorber_rows:
        per_material.setdefault(row["material_id"], []).append(row)
    structures, missing = corpus_structures(material_rows, progress)
    findings: list[Finding] = []
    mismatched = []
    for row in tqdm(material_rows, desc="auditing", unit="material", disable=not progress, mininterval=5.0):
        structure = structures.get(row["material_id"])
        if structure is None:
            continue
        groups = metal_site_groups(structure)
        rows = per_material.get(row["material_id"], [])
        if any([g[0] for g in groups.get(r["element"], [])] != list(r["site_indices"] or []) for r in rows):
            mismatched.append(row["material_id"])  # the structure read here is not the one labelled
            continue
        material = CorpusMaterial(row["material_id"], row["source"], row["source_id"], row["name"] or "",
                                  row["formula"], structure, groups)
        text = amcsd_cif_text(row["source_id"]) if row["source"] == "amcsd" else None
        findings.extend(audit_material(material, _labels_from_rows(rows), text).findings)
    findings.extend(duplicate_disagreements(pq.read_table(corpus_dir / "materials.parquet", columns=[
        "material_id", "source", "name", "formula", "space_group_number"]).to_pylist(), absorber_rows))
    summary = audit_summary(findings)
    summary.update(materials=len(material_rows), audited=len(material_rows) - len(missing) - len(mismatched),
                   structures_missing=len(missing), site_mismatch=len(mismatched))
    return {"summary": summary, "findings": findings}
