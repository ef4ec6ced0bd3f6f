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

Trial cells come from the first lines taken as low-index reflections (TREOR's idea, coarsely: axial lines,
and for orthorhombic cells also two axial lines and an (h k 1) one); a line is indexed when a calculated line
lies within ``tolerance`` (1/A in Q) of it. A cell with many calculated lines indexes many observed ones by
chance, so each family's merit is the indexed share minus the share that many calculated lines would hit at
random (de Wolff's M20 weighs a cell the same way): near 1 for a cell explaining every line with few spare
ones, near 0 for one no better than chance, and low for a dense cell that indexes everything by having a line
everywhere. Lattice centring is not modelled (a centred cell's absent lines count as spare), so merits of
centred cells are lower than their indexing is good. Monoclinic and triclinic cells are not tried (a
monoclinic family was measured and added nothing: docs/xrd-search-match.md).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from ._xrd import XRD_Q_GRID

FAMILIES = ("cubic", "tetragonal", "hexagonal", "orthorhombic")
FOUR_PI2 = (2 * np.pi) ** 2
N_LINES = 20  # the first lines used: enough to decide, few enough to be resolved and strong
PEAK_THRESHOLD = 0.04  # of the tallest (smoothed) peak; the paper's noise is up to 2 % of it
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

    def distance(self, x: np.ndarray) -> np.ndarray:
        """|x - the nearest allowed value|."""
        f = np.clip(np.floor(x), 0, self.top).astype(np.intp)
        return np.minimum(np.abs(x - self.below[f]), np.abs(self.above[np.minimum(f + 1, self.top + 1)] - x))


def _sums(max_index: int, form) -> np.ndarray:
    r = range(max_index + 1)
    return np.array(sorted({form(h, k) for h in r for k in r}), dtype=float)


_CUBIC = _Allowed(np.array(sorted({h * h + k * k + m * m for h, k, m in itertools.product(range(8), repeat=3)} - {0})))
_TETRAGONAL = _Allowed(_sums(8, lambda h, k: h * h + k * k))
_HEXAGONAL = _Allowed(_sums(8, lambda h, k: h * h + h * k + k * k))
_SQUARES = _Allowed(np.arange(6, dtype=float) ** 2)
_L2 = np.arange(9, dtype=float) ** 2


@dataclass(frozen=True)
class IndexingEvidence:
    """Per lattice family: the share of the first lines indexed and the merit (that share minus chance)."""

    n_lines: int
    indexed: dict[str, float]
    merit: dict[str, float]

    def features(self) -> np.ndarray:
        """(N_FEATURES,): share indexed, merit and merit >= 0.8 per family, then lines found / N_LINES."""
        merit = [self.merit[f] for f in FAMILIES]
        return np.array([self.indexed[f] for f in FAMILIES] + merit + [float(m >= 0.8) for m in merit]
                        + [self.n_lines / N_LINES])

    def to_dict(self) -> dict:
        return {"n_lines": self.n_lines, "indexed": dict(self.indexed), "merit": dict(self.merit)}


N_FEATURES = 3 * len(FAMILIES) + 1


def peak_positions(pattern: np.ndarray, n: int = N_LINES, threshold: float = PEAK_THRESHOLD) -> np.ndarray:
    """Q (1/A) of the first ``n`` local maxima above ``threshold`` of the tallest, on ``XRD_Q_GRID``
    (smoothed by one grid point, centres refined by a parabola through the three top points)."""
    from scipy.ndimage import gaussian_filter1d

    y = gaussian_filter1d(np.asarray(pattern, dtype=float), 1.0)
    top = float(y.max()) if len(y) else 0.0
    if top <= 0:
        return np.empty(0)
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
    span = window[1] - window[0]
    indexed, merit = {}, {}
    trials = {"cubic": _cubic(s, tol, window), "tetragonal": _uniaxial(s, tol, window, _TETRAGONAL),
              "hexagonal": _uniaxial(s, tol, window, _HEXAGONAL), "orthorhombic": _orthorhombic(s, tol, window)}
    for family, (hit, lines) in trials.items():
        share = hit.mean(axis=1)
        chance = np.minimum(1.0, lines * 2 * np.median(tol) / span)
        score = share - chance
        best = int(np.argmax(score))
        indexed[family], merit[family] = float(share[best]), float(max(score[best], 0.0))
    return IndexingEvidence(len(q), indexed, merit)


def _count_in(calc: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    return ((calc >= window[0]) & (calc <= window[1])).sum(axis=-1)


def _cubic(s, tol, window):
    a = np.unique(np.round(np.concatenate([s[:3] / n for n in _CUBIC.values[:8]]), 9))
    hit = _CUBIC.distance(s[None, :] / a[:, None]) * a[:, None] <= tol[None, :]
    return hit, _count_in(a[:, None] * _CUBIC.values[None, :], window)


def _uniaxial(s, tol, window, planar):
    first = s[:6]
    nonzero = planar.values[planar.values > 0]
    a = np.unique(np.round(np.concatenate([s[:4] / p for p in nonzero[:4]]), 9))
    pairs = [np.stack(np.meshgrid(a, np.concatenate([first / l2 for l2 in (1.0, 4.0, 9.0, 16.0)]),
                                  indexing="ij"), -1).reshape(-1, 2)]
    for p in nonzero[:2]:  # c from a mixed line (hk l): (s - A p) / l^2
        for l2 in (1.0, 4.0):
            c = (first[None, :] - a[:, None] * p) / l2
            pairs.append(np.stack([np.repeat(a, len(first)), c.ravel()], -1))
    pairs = np.concatenate(pairs)
    pairs = np.unique(np.round(pairs[pairs[:, 1] > 1e-5], 9), axis=0)

    def hits(cells, n):
        a, c = cells[:, 0:1, None], cells[:, 1:2, None]
        ratio = (s[None, :n, None] - c * _L2[None, None, :]) / a  # (cells, lines, l)
        return (planar.distance(ratio) * a <= tol[None, :n, None]).any(axis=2)

    pairs = _screen(pairs, hits)
    calc = pairs[:, 0, None, None] * planar.values[None, :, None] + pairs[:, 1, None, None] * _L2[None, None, :]
    return hits(pairs, len(s)), _count_in(calc.reshape(len(pairs), -1), window)


def _screen(cells: np.ndarray, hits, keep: int = SCREEN_KEEP) -> np.ndarray:
    """The ``keep`` trial cells indexing most of the first SCREEN_LINES lines (all lines are scored after)."""
    if len(cells) <= keep:
        return cells
    share = hits(cells, SCREEN_LINES).mean(axis=1)
    return cells[np.argpartition(-share, keep - 1)[:keep]]


def _orthorhombic(s, tol, window):
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
    # two axial lines, the third axis from any other line taken as (h k 1), h, k in {0, 1}
    c = first[None, None, None, :, None] - a[..., None, None] * x - b[..., None, None] * y
    other = (np.arange(6)[None, :] != i[:, None]) & (np.arange(6)[None, :] != j[:, None])
    shape = c.shape
    mixed = np.stack([np.broadcast_to(a[..., None, None], shape), np.broadcast_to(b[..., None, None], shape), c], -1)
    mixed = mixed[np.broadcast_to(other[:, None, None, :, None], shape)]
    cells = np.concatenate([three.reshape(-1, 3), mixed.reshape(-1, 3)])
    cells = np.unique(np.round(cells[cells[:, 2] > 1e-5], 9), axis=0)

    def hits(cells, n):
        a, b, c = (cells[:, m, None, None, None] for m in range(3))
        squares = _SQUARES.values if n > SCREEN_LINES else _SQUARES.values[:4]  # the first lines: h, k <= 3
        rest = (s[None, :n, None, None] - a * squares[None, None, :, None] - b * squares[None, None, None, :]) / c
        return (_SQUARES.distance(rest) * c <= tol[None, :n, None, None]).any(axis=(2, 3))

    cells = _screen(cells, hits)
    squares = _SQUARES.values
    grid = (cells[:, 0, None, None, None] * squares[None, :, None, None]
            + cells[:, 1, None, None, None] * squares[None, None, :, None]
            + cells[:, 2, None, None, None] * squares[None, None, None, :])
    return hits(cells, len(s)), _count_in(grid.reshape(len(cells), -1), window)
