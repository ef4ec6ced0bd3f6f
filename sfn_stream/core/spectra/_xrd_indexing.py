"""Metric indexing of a powder pattern's first lines: how well a cubic, tetragonal, hexagonal or
orthorhombic cell explains the peak positions.

Classical powder indexing (Ito, TREOR, DICVOL) finds a cell whose reciprocal metric puts a calculated
line at every observed one; the lattice family of the simplest cell that does is the crystal system's
first candidate. Here the question is only how well each family *can* index the pattern, as evidence
beside search-match, which compares profiles and so misses isostructural compounds whose cell is
stretched along one axis. With s = 1/d^2 = (Q / 2 pi)^2:

- cubic        s = A (h^2 + k^2 + l^2)
- tetragonal   s = A (h^2 + k^2) + C l^2
- hexagonal    s = A (h^2 + hk + k^2) + C l^2   (trigonal cells index the same way)
- orthorhombic s = A h^2 + B k^2 + C l^2

Trial cells (TREOR's idea: solve the metric from a few lines given assumed low indices): the first lines
taken as axial reflections; and the first line with one (uniaxial) or two (orthorhombic) of the next lines
taken as any reflection of low index, solved for the metric. Trial cells are screened on the first 8 lines
(among cells indexing as many, the smallest cell first); the best 48 are scored on all lines.

A line is indexed when a calculated line lies within ``tolerance`` (1/A in Q) of it. A cell with many
calculated lines indexes many observed ones by chance, so the merit is the indexed share minus the share
that many calculated lines would hit at random (de Wolff's M20 weighs a cell the same way): near 1 for a cell
explaining every line with few spare ones, near 0 for one no better than chance. Lattice centring counts:
each family is scored with its Bravais centrings (cubic P/I/F, tetragonal P/I, hexagonal P and R in the
hexagonal setting, orthorhombic P/A/B/C/I/F), calculated lines only where the centring allows reflections,
and keeps the best. Monoclinic and triclinic cells are not tried (a monoclinic family was measured and added
nothing: docs/xrd-search-match.md).

Each family's best cell is then refined by least squares on the lines it indexes, and its fit reported as
indexing programs judge one: the share indexed after refinement, the mean deviation of the indexed lines (in
tolerances: near 0 for the true cell of a clean pattern, about 0.5 for a cell indexing by chance), and de Wolff's
M = s_last / (2 mean |ds| N_calc) (J. Appl. Cryst. 1, 108 (1968)).

Lines are the local maxima above 4 % of the tallest and above 3.5 noise sigmas, the noise estimated from the
pattern itself: on noisy patterns the 4 % alone lets noise maxima in (7 % of the lines found on validation
patterns of the paper's protocol were no line of the structure), and one false line among the first six spoils
the trial cells.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from . import _xrd_kernels
from ._xrd import XRD_Q_GRID

FAMILIES = ("cubic", "tetragonal", "hexagonal", "orthorhombic")
CENTRINGS = {"cubic": "PIF", "tetragonal": "PI", "hexagonal": "PR", "orthorhombic": "PABCIF"}
FOUR_PI2 = (2 * np.pi) ** 2
N_LINES = 20  # the first lines used: enough to decide, few enough to be resolved and strong
PEAK_THRESHOLD = 0.04  # of the tallest (smoothed) peak; the paper's noise is up to 2 % of it
# A line must also stand NOISE_SIGMAS above zero. Chosen on validation structures' sticks, never their labels:
# 3.0 / 3.5 / 4.0 sigmas left 516 / 188 / 79 false lines and found 17,184 / 17,065 / 16,811 true ones (2.0: 1,251 and
# 16,882; the 4 % alone: 1,359 and 16,774); 3.5 is the best true-minus-false count.
NOISE_SIGMAS = 3.5
# Median |second difference| / sqrt(6) of a preprocessed pattern per unit of Gaussian noise added before it (SNIP
# and the clipping at zero shrink it): 0.62, fitted on 279 validation patterns of known noise (0.005-0.02).
_NOISE_SCALE = 0.62
TOLERANCE_Q = 0.006  # 1/A: peak position error of a 0.05-0.2 deg wide line on a 0.005 1/A grid
SCREEN_LINES, SCREEN_KEEP = 8, 48  # trial cells are first screened on the first 8 lines; the best 48 go on


class _Allowed:
    """A sorted set of allowed integers (index sums) with tables for the distance of any real to the set."""

    def __init__(self, values: np.ndarray):
        self.values = np.asarray(values, dtype=float)
        top = int(self.values[-1])
        grid = np.arange(top + 2)
        j = np.searchsorted(self.values, grid, side="right")
        self.below = self.values[np.clip(j - 1, 0, len(self.values) - 1)]  # largest allowed <= m (else the least)
        k = np.searchsorted(self.values, grid, side="left")
        self.above = self.values[np.clip(k, 0, len(self.values) - 1)]  # smallest allowed >= m (else the largest)
        self.top = top
        fine = np.arange((top + 1) * self.STEPS + 1) / self.STEPS
        self.table = self.distance(fine).astype(np.float32)

    STEPS = int(_xrd_kernels.STEPS)  # grid points per unit of the screening table: within 1 / 2048 of exact

    def distance(self, x: np.ndarray) -> np.ndarray:
        """|x - the nearest allowed value|."""
        f = np.clip(np.floor(x), 0, self.top).astype(np.intp)
        return np.minimum(np.abs(x - self.below[f]), np.abs(self.above[np.minimum(f + 1, self.top + 1)] - x))


def _sums(max_index: int, form) -> np.ndarray:
    r = range(max_index + 1)
    return np.array(sorted({form(h, k) for h in r for k in r}), dtype=float)


_CUBIC = _Allowed(np.array(sorted({h * h + k * k + m * m for h, k, m in itertools.product(range(8), repeat=3)} - {0})))
_PLANAR = {"tetragonal": _Allowed(_sums(8, lambda h, k: h * h + k * k)),
           "hexagonal": _Allowed(_sums(8, lambda h, k: h * h + h * k + k * k))}
_SQUARES = _Allowed(np.arange(6, dtype=float) ** 2)
_L2_32 = np.arange(16, dtype=np.float32) ** 2  # rhombohedral cells in the hexagonal setting need l up to ~15
_LOW = np.array([(h * h, k * k, m * m) for h, k, m in itertools.product(range(3), repeat=3) if (h, k, m) != (0, 0, 0)],
                dtype=float)  # the orthorhombic (h^2, k^2, l^2) of indices <= 2
_LOW_FIRST = _LOW[(_LOW[:, 0] >= _LOW[:, 1]) & (_LOW[:, 1] >= _LOW[:, 2])]  # axes unordered: one per permutation


@dataclass(frozen=True)
class IndexingEvidence:
    """Per lattice family: the share of the first lines indexed, the merit (that share minus chance), and, where
    the merit is positive, the best cell's centring, edges (A: cubic a; tetragonal, hexagonal a, c; orthorhombic
    a, b, c; the trial cell's, as scored) and fit after refinement (:class:`CellFit`)."""

    n_lines: int
    indexed: dict[str, float]
    merit: dict[str, float]
    centring: dict[str, str] = field(default_factory=dict)
    cell: dict[str, tuple[float, ...]] = field(default_factory=dict)
    fit: dict[str, CellFit] = field(default_factory=dict)

    def features(self) -> np.ndarray:
        """(N_FEATURES,): share indexed, merit and merit >= 0.8 per family, lines found / N_LINES, then the refined
        fit per family (share indexed, mean deviation in tolerances, log10 M; a family without a cell: 0, 1, -3)."""
        merit = [self.merit[f] for f in FAMILIES]
        fits = [self.fit.get(f, NO_FIT) for f in FAMILIES]
        return np.array([self.indexed[f] for f in FAMILIES] + merit + [float(m >= 0.8) for m in merit]
                        + [self.n_lines / N_LINES] + [x for fit in fits for x in fit])

    def to_dict(self) -> dict:
        return {"n_lines": self.n_lines, "indexed": dict(self.indexed), "merit": dict(self.merit),
                "centring": dict(self.centring), "cell_A": {f: list(c) for f, c in self.cell.items()},
                "fit": {f: fit._asdict() for f, fit in self.fit.items()}}


class CellFit(NamedTuple):
    """A cell's fit after least-squares refinement on the lines it indexes."""

    indexed: float  # share of the lines indexed
    deviation: float  # mean |s_obs - s_calc| of the indexed lines, in tolerances
    log10_m: float  # de Wolff's M = s_last / (2 mean |ds| N_calc), log10


NO_FIT = CellFit(0.0, 1.0, -3.0)
N_FEATURES = 3 * len(FAMILIES) + 1 + len(NO_FIT) * len(FAMILIES)


def noise_sigma(pattern: np.ndarray) -> float:
    """The noise of a preprocessed pattern, in units of its tallest point: the median absolute second difference
    over the measured range (first to last non-zero point), which smooth peaks barely move, scaled to the sigma of
    Gaussian noise (``_NOISE_SCALE``). 0 for a noise-free pattern."""
    x = np.asarray(pattern)
    measured = np.flatnonzero(x > 0)
    if len(measured) < 10:
        return 0.0
    y = np.asarray(x[measured[0]:measured[-1] + 1], dtype=float)
    second = y[2:] - 2 * y[1:-1] + y[:-2]
    return 1.4826 * float(np.median(np.abs(second))) / np.sqrt(6) / _NOISE_SCALE


def peak_positions(pattern: np.ndarray, n: int = N_LINES, threshold: float = PEAK_THRESHOLD,
                   noise_sigmas: float = NOISE_SIGMAS) -> np.ndarray:
    """Q (1/A) of the first ``n`` local maxima above ``threshold`` of the tallest and above ``noise_sigmas`` times
    the pattern's noise (:func:`noise_sigma`), on ``XRD_Q_GRID`` (smoothed by one grid point, centres refined by a
    parabola through the three top points)."""
    from scipy.ndimage import gaussian_filter1d

    y = gaussian_filter1d(np.asarray(pattern, dtype=float), 1.0)
    top = float(y.max()) if len(y) else 0.0
    if top <= 0:
        return np.empty(0)
    threshold = max(threshold, noise_sigmas * noise_sigma(pattern)) if noise_sigmas > 0 else threshold
    i = np.flatnonzero((y[1:-1] > y[:-2]) & (y[1:-1] >= y[2:]) & (y[1:-1] > threshold * top)) + 1
    a, b, c = y[i - 1], y[i], y[i + 1]
    curvature = a - 2 * b + c
    offset = np.where(np.abs(curvature) > 1e-12, 0.5 * (a - c) / np.where(curvature == 0, 1, curvature), 0.0)
    step = XRD_Q_GRID[1] - XRD_Q_GRID[0]
    return (XRD_Q_GRID[i] + np.clip(offset, -0.5, 0.5) * step)[:n]


def index_pattern(pattern: np.ndarray, tolerance: float = TOLERANCE_Q) -> IndexingEvidence:
    """How well each lattice family indexes the first lines of ``pattern`` (on ``XRD_Q_GRID``)."""
    q = peak_positions(pattern)
    if len(q) < 6:  # too few lines to tell cells apart: no evidence for any family
        return IndexingEvidence(len(q), dict.fromkeys(FAMILIES, 0.0), dict.fromkeys(FAMILIES, 0.0))
    s = q ** 2 / FOUR_PI2
    tol = 2 * q * tolerance / FOUR_PI2  # the tolerance in s at each line
    window = (((q[0] - tolerance) ** 2) / FOUR_PI2, ((q[-1] + tolerance) ** 2) / FOUR_PI2)
    trials = {"cubic": [_cubic_trials(s)], "tetragonal": _uniaxial_trials(s, _PLANAR["tetragonal"]),
              "hexagonal": _uniaxial_trials(s, _PLANAR["hexagonal"]), "orthorhombic": _orthorhombic_trials(s)}
    indexed, merit, centring, cell, fit = {}, {}, {}, {}, {}
    for family, rules in trials.items():  # each rule's cells are screened apart: the best of each go on
        cells = np.concatenate([_screen(family, _distinct(c, sort_axes=family == "orthorhombic"), s, tol)
                                for c in rules])
        indexed[family], merit[family], lattice, best = _score(family, cells, s, tol, window)
        if merit[family] > 0:  # a cell no better than chance is no cell to show
            centring[family], cell[family] = lattice, cell_edges(family, best)
            fit[family] = refined_fit(s, tol, window, _centred_forms(family)[lattice], best)
    return IndexingEvidence(len(q), indexed, merit, centring, cell, fit)


def refined_fit(s, tol, window, forms: np.ndarray, params: np.ndarray, rounds: int = 2) -> CellFit:
    """The fit of the cell ``params`` (metric parameters; ``forms``: its allowed reflections' coefficients) to the
    lines ``s``, after ``rounds`` of least squares on the lines it indexes (each round re-assigns the lines)."""
    for _ in range(rounds):
        calc = forms @ params
        kept = (calc > 0) & (calc <= window[1])
        calc, kept_forms = calc[kept], forms[kept]
        nearest = np.abs(s[:, None] - calc[None, :]).argmin(1)
        hit = np.abs(s - calc[nearest]) <= tol
        if hit.sum() < forms.shape[1] + 1:  # no more lines than parameters: nothing to judge a fit by
            return NO_FIT
        refined = np.linalg.lstsq(kept_forms[nearest[hit]], s[hit], rcond=None)[0]
        if np.any(refined <= 0):
            break
        params = refined
    calc = forms @ params
    calc = calc[(calc > 0) & (calc <= window[1])]
    deviation = np.abs(s - calc[np.abs(s[:, None] - calc[None, :]).argmin(1)])
    hit = deviation <= tol
    n_calc = len(np.unique(np.round(calc[calc <= s[-1] + tol[-1]], 8)))
    mean = float(np.mean(deviation[hit])) if hit.any() else float(tol.mean())
    m = s[-1] / (2 * max(mean, 1e-7) * max(n_calc, 1))
    return CellFit(float(hit.mean()), float(np.mean(deviation[hit] / tol[hit])) if hit.any() else 1.0,
                   float(np.log10(max(m, 1e-3))))


# ------------------------------------------------------------------ trial cells


def _cubic_trials(s):
    return np.concatenate([s[:3] / n for n in _CUBIC.values[:8]])[:, None]


def _uniaxial_trials(s, planar):
    """Two rules' (A, C): A from the first lines as (hk0), C from a line as (00l) or (hkl) with h, k <= 1; and
    both from the first line and one of the next six as any reflection of low index."""
    first = s[:6]
    nonzero = planar.values[planar.values > 0]
    a = np.concatenate([s[:4] / p for p in nonzero[:4]])
    cells = [np.stack(np.meshgrid(a, np.concatenate([first / l2 for l2 in (1.0, 4.0, 9.0, 16.0)]),
                                  indexing="ij"), -1).reshape(-1, 2)]
    for p in nonzero[:2]:  # c from a mixed line (hk l): (s - A p) / l^2
        for l2 in (1.0, 4.0):
            c = (first[None, :] - a[:, None] * p) / l2
            cells.append(np.stack([np.repeat(a, len(first)), c.ravel()], -1))
    planar_sums = np.concatenate([[0.0], nonzero[:5]])
    any_low = np.array([(p, m * m) for p in planar_sums for m in range(7) if (p, m) != (0, 0)], dtype=float)
    return [_positive(np.concatenate(cells)), _positive(_solve_metric(s, any_low, any_low, others=range(1, 7)))]


def _positive(cells: np.ndarray) -> np.ndarray:
    positive = cells[:, 0] > 1e-5
    for column in cells.T[1:]:  # column by column: a reduce over the short axis costs more than the test
        positive &= column > 1e-5
    return cells[positive]


def _orthorhombic_trials(s):
    """Two rules' (A, B, C): three of the first six lines as axial (h00) with h <= 2, or two axial and the third
    axis from another line as (h k 1) with h, k <= 1; and all three from the first line and two of the next six
    as any reflections with indices <= 2."""
    first = s[:6]
    axial = np.array([1.0, 4.0])  # an axial line is (100) or (200)
    i, j, k = np.array([t for t in itertools.combinations(range(6), 3)]).T
    three = np.stack(np.broadcast_arrays(*(first[n][:, None, None, None] / axial[(slice(None),) + (None,) * m]
                                           for m, n in ((2, i), (1, j), (0, k)))), -1)  # three axial lines
    i, j = np.array([t for t in itertools.combinations(range(6), 2)]).T
    a = first[i][:, None, None] / axial[None, :, None]  # (pair, h2, 1)
    b = first[j][:, None, None] / axial[None, None, :]  # (pair, 1, k2)
    a, b = np.broadcast_arrays(a, b)
    x, y = np.array([0.0, 1.0, 0.0, 1.0]), np.array([0.0, 0.0, 1.0, 1.0])
    c = first[None, None, None, :, None] - a[..., None, None] * x - b[..., None, None] * y
    other = (np.arange(6)[None, :] != i[:, None]) & (np.arange(6)[None, :] != j[:, None])
    shape = c.shape
    mixed = np.stack([np.broadcast_to(a[..., None, None], shape), np.broadcast_to(b[..., None, None], shape), c], -1)
    mixed = mixed[np.broadcast_to(other[:, None, None, :, None], shape)]
    return [_positive(np.concatenate([three.reshape(-1, 3), mixed.reshape(-1, 3)])),
            _positive(_solve_metric(s, _LOW_FIRST, _LOW, others=range(1, 7)))]


def _solve_metric(s, first_forms, forms, others) -> np.ndarray:
    """Metric parameters solving s = form . params for the first line (one of ``first_forms``) and
    ``len(params) - 1`` lines of ``others`` (each one of ``forms``)."""
    others = [n for n in others if n < len(s)]
    inverse = _inverse_systems(first_forms.tobytes(), forms.tobytes(), forms.shape[1])
    lines = np.array(list(itertools.combinations(others, forms.shape[1] - 1)))  # (choices, params - 1)
    rhs = np.concatenate([np.full((len(lines), 1), s[0]), s[lines]], axis=1)
    return _xrd_kernels.solve_systems(inverse, rhs)


@functools.lru_cache(maxsize=None)
def _inverse_systems(first_forms: bytes, forms: bytes, n_params: int) -> np.ndarray:
    """The inverses of every solvable assignment of forms to lines (the same for every pattern: cached)."""
    rows = [np.frombuffer(first_forms).reshape(-1, n_params)] + [np.frombuffer(forms).reshape(-1, n_params)] * (
        n_params - 1)
    grids = np.meshgrid(*[np.arange(len(r)) for r in rows], indexing="ij")
    systems = np.stack([r[g.ravel()] for r, g in zip(rows, grids)], axis=1)  # (assignments, lines, params)
    return np.linalg.inv(systems[np.abs(np.linalg.det(systems)) > 1e-9])


def _distinct(cells: np.ndarray, sort_axes: bool = False) -> np.ndarray:
    """Cells with distinct parameters (to 1e-6 1/A^2; with ``sort_axes``, three axes taken unordered)."""
    if sort_axes:  # three axes, sorted by a network of minima and maxima (np.sort over a short axis is slow)
        a, b, c = cells.T
        low, high = np.minimum(a, b), np.maximum(a, b)
        middle, high = np.minimum(high, c), np.maximum(high, c)
        cells = np.stack([np.minimum(low, middle), np.maximum(low, middle), high], axis=1)
    key = np.round(cells * 1e6).astype(np.int64)
    flat = key[:, 0]
    for column in key.T[1:]:
        flat = flat * 2_000_003 + column
    return cells[np.unique(flat, return_index=True)[1]]


def _screen(family: str, cells: np.ndarray, s, tol, keep: int = SCREEN_KEEP) -> np.ndarray:
    """The ``keep`` trial cells indexing most of the first SCREEN_LINES lines (any index, no centring); among
    cells indexing as many, the smallest (largest reciprocal volume) first."""
    if len(cells) <= keep:
        return cells
    n = SCREEN_LINES
    hits = _screen_hits(family, cells, s[:n].astype(np.float32), tol[:n].astype(np.float32))
    return cells[_xrd_kernels.best_cells(hits, cells, keep)]


def _screen_hits(family: str, cells: np.ndarray, s, tol) -> np.ndarray:
    """Per trial cell: how many of the lines ``s`` a reflection of any (low) index puts within ``tol`` (compiled:
    ``_xrd_kernels``; the cells are taken in float32, as ``s`` and ``tol``)."""
    if family == "cubic":
        return _xrd_kernels.cubic_hits(cells, s, tol, _CUBIC)
    if family == "orthorhombic":  # the first lines: h, k <= 3
        return _xrd_kernels.orthorhombic_hits(cells, s, tol, _SQUARES, _SQUARES.values[:4].astype(np.float32))
    return _xrd_kernels.uniaxial_hits(cells, s, tol, _PLANAR[family], _L2_32)


# ------------------------------------------------------------------ scoring with centring


def _reflections(family: str) -> np.ndarray:
    """(n, 3) Miller indices whose lines a cell of ``family`` is scored on."""
    if family == "cubic":
        return np.array([t for t in itertools.product(range(8), repeat=3) if any(t)])
    if family == "tetragonal":
        return np.array([t for t in itertools.product(range(9), range(9), range(13)) if any(t)])
    if family == "hexagonal":  # signed h, k: the rhombohedral condition tells (h k l) from (-h -k l)
        return np.array([t for t in itertools.product(range(-8, 9), range(-8, 9), range(16)) if any(t)])
    return np.array([t for t in itertools.product(range(8), repeat=3) if any(t)])


_ALLOWED = {  # reflection conditions of the centred lattices (International Tables A, table 2.2.13.1)
    "P": lambda h, k, l: np.ones(len(h), bool),
    "I": lambda h, k, l: (h + k + l) % 2 == 0,
    "F": lambda h, k, l: (h % 2 == k % 2) & (k % 2 == l % 2),
    "A": lambda h, k, l: (k + l) % 2 == 0,
    "B": lambda h, k, l: (h + l) % 2 == 0,
    "C": lambda h, k, l: (h + k) % 2 == 0,
    "R": lambda h, k, l: (-h + k + l) % 3 == 0,  # obverse, hexagonal setting
}


def metric_forms(family: str, hkl: np.ndarray) -> np.ndarray:
    """(n, parameters): the coefficients of A (B, C) in s for each reflection."""
    h, k, l = hkl.T.astype(float)
    if family == "cubic":
        return (h * h + k * k + l * l)[:, None]
    if family == "tetragonal":
        return np.stack([h * h + k * k, l * l], 1)
    if family == "hexagonal":
        return np.stack([h * h + h * k + k * k, l * l], 1)
    return np.stack([h * h, k * k, l * l], 1)


@functools.lru_cache(maxsize=None)
def _centred_forms(family: str) -> dict[str, np.ndarray]:
    hkl = _reflections(family)
    return {c: np.unique(metric_forms(family, hkl[_ALLOWED[c](*hkl.T)]), axis=0) for c in CENTRINGS[family]}


def _score(family: str, cells: np.ndarray, s, tol, window):
    """(indexed share, merit, centring, cell) of the best trial cell and centring of ``family``."""
    if not len(cells):
        return 0.0, 0.0, "P", np.full(cells.shape[1], np.inf)
    span = window[1] - window[0]
    width = 2 * np.median(tol)
    best = (0.0, -np.inf, "P", cells[0])
    for centring, forms in _centred_forms(family).items():
        share, distinct = _indexed_share(cells @ forms.T, s, tol, window)
        score = share - np.minimum(1.0, distinct * width / span)
        i = int(np.argmax(score))
        if score[i] > best[1]:
            best = (float(share[i]), float(score[i]), centring, cells[i])
    return best[0], max(best[1], 0.0), best[2], best[3]


def _indexed_share(calc: np.ndarray, s, tol, window):
    """Per cell (row of ``calc``): the share of ``s`` within ``tol`` of a calculated line, and the number of
    distinct calculated lines in ``window`` (compiled: ``_xrd_kernels.lines_matched``)."""
    matched, distinct = _xrd_kernels.lines_matched(calc, s, tol, window)
    return matched / len(s), distinct


_N_EDGES = {"cubic": 1, "tetragonal": 2, "hexagonal": 2, "orthorhombic": 3}


def family_edges(family: str, edges) -> list[float]:
    """The family's independent edges (cubic a; tetragonal, hexagonal a, c; orthorhombic a, b, c) of ``edges``
    given either so (``IndexingEvidence.cell``) or as the conventional a, b, c."""
    edges = [float(e) for e in edges]
    return {1: edges[:1], 2: [edges[0], edges[-1]]}.get(_N_EDGES[family], edges[:3])


def conventional_cell(family: str, edges) -> tuple[float, float, float]:
    """(a, b, c) in A of the family's independent ``edges``."""
    e = family_edges(family, edges)
    return {1: (e[0], e[0], e[0]), 2: (e[0], e[0], e[1])}.get(len(e), tuple(e))


def lattice_lines(family: str, centring: str, edges, q_max: float) -> np.ndarray:
    """Q (1/A, ascending, distinct) of the lines a cell of ``family`` with ``centring`` and ``edges`` (A: the
    family's own, or a, b, c) allows up to ``q_max``: the tick marks under a pattern."""
    params = 1.0 / np.asarray(family_edges(family, edges)) ** 2
    if family == "hexagonal":
        params[0] *= 4.0 / 3.0
    s = _centred_forms(family)[centring] @ params
    q = np.sqrt(np.unique(np.round(s[(s > 0) & (s <= (q_max ** 2) / FOUR_PI2)], 10)) * FOUR_PI2)
    return q


def cell_edges(family: str, params: np.ndarray) -> tuple[float, ...]:
    """Cell edges (A) of metric parameters: a = 1 / sqrt(A), hexagonal a = sqrt(4 / (3 A))."""
    lengths = 1.0 / np.sqrt(np.maximum(params, 1e-12))
    if family == "hexagonal":
        lengths[0] *= np.sqrt(4.0 / 3.0)
    return tuple(round(float(x), 4) for x in lengths)
