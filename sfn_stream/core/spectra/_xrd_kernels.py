"""Compiled kernels of the powder indexing (``_xrd_indexing``): the screen of trial cells, the choice of the best,
the solve of trial metrics and the line matching of the scoring.

Each keeps the arithmetic of the NumPy code it replaced (float32 in the screen, float64 elsewhere, the same order of
operations), so the evidence is bit for bit what the xrd-indexed bundles were fitted with; the tests compare each
kernel with that NumPy code. What they save is work, not precision: a line's search stops at its first indexing
reflection, or where the indices have gone past it (beyond the line the distance only grows), and nothing of size
cells x lines x indices is allocated (~17,000 trial cells a pattern). Distances to the nearest allowed index sum come
from the table of ``_Allowed`` (1,024 points per unit).
"""

from __future__ import annotations

import functools

import numpy as np

STEPS = np.float32(1024.0)  # grid points per unit of the distance tables (``_Allowed.STEPS``)
HALF = np.float32(0.5)


@functools.cache
def _kernels():
    """Compile on first use: numba is imported only by processes that index patterns."""
    from numba import njit

    def jit(**options):
        def compile_(function):
            try:
                return njit(cache=True, nogil=True, **options)(function)
            except RuntimeError:  # no writable place for numba's cache (read-only install, no home): compile anew
                return njit(nogil=True, **options)(function)
        return compile_

    @jit(inline="always")
    def distance(x, table, least):  # x float32: the table index is taken in float32, as NumPy takes it
        if x < 0:
            return least - np.float64(x)
        i = np.intp(x * STEPS + HALF)
        return np.float64(table[min(max(i, 0), len(table) - 1)])

    @jit()
    def cubic(cells, s, tol, table, least):
        hits = np.zeros(len(cells), np.int64)
        for n in range(len(cells)):
            a = np.float32(cells[n, 0])
            for j in range(len(s)):
                if distance(s[j] / a, table, least) * np.float64(a) <= np.float64(tol[j]):
                    hits[n] += 1
        return hits

    @jit()
    def uniaxial(cells, s, tol, table, least, l2):
        hits = np.zeros(len(cells), np.int64)
        for n in range(len(cells)):
            a, c = np.float32(cells[n, 0]), np.float32(cells[n, 1])
            for j in range(len(s)):
                for m in range(len(l2)):
                    x = (s[j] - c * l2[m]) / a
                    if distance(x, table, least) * np.float64(a) <= np.float64(tol[j]):
                        hits[n] += 1
                        break
                    if x < 0:  # past the line: higher l only lies further past it
                        break
        return hits

    @jit()
    def orthorhombic(cells, s, tol, table, least, squares):
        hits = np.zeros(len(cells), np.int64)
        for n in range(len(cells)):
            a, b, c = np.float32(cells[n, 0]), np.float32(cells[n, 1]), np.float32(cells[n, 2])
            for j in range(len(s)):
                found = False
                for h in range(len(squares)):
                    for k in range(len(squares)):
                        rest = (s[j] - a * squares[h] - b * squares[k]) / c
                        if distance(rest, table, least) * np.float64(c) <= np.float64(tol[j]):
                            found = True
                            break
                        if rest < 0:  # past the line: a higher k only lies further past it
                            break
                    if found or (k == 0 and rest < 0):  # past it already at k = 0: so is every higher h
                        break
                if found:
                    hits[n] += 1
        return hits

    @jit()
    def lines_matched(calc, s, tol, low, high):
        """Per row of ``calc``: how many of ``s`` lie within ``tol`` of a calculated line in [low, high], and how
        many distinct calculated lines lie there. Distances are taken as a search over the rows laid end to end
        would take them (each row offset by ``2 (high + 2) r``), so the counts are the same to the last bit."""
        rows, m = calc.shape
        step = 2.0 * (high + 2.0)
        distinct = np.zeros(rows, np.int64)
        matched = np.zeros(rows, np.int64)
        row = np.empty(m)
        for r in range(rows):
            inside = 0
            for k in range(m):
                v = calc[r, k]
                if v >= low and v <= high:
                    row[inside] = v
                    inside += 1
            if inside == 0:
                continue  # lines parked beyond the window match nothing
            lines = np.sort(row[:inside])
            repeated = 0
            for i in range(inside - 1):
                if lines[i + 1] - lines[i] <= 1e-9:
                    repeated += 1
            distinct[r] = inside - repeated
            offset = step * np.float64(r)
            for i in range(inside):
                lines[i] = lines[i] + offset
            for j in range(len(s)):
                query = s[j] + offset
                i = np.searchsorted(lines, query)
                near = np.inf
                if i < inside:
                    near = abs(lines[i] - query)
                if i > 0:
                    near = min(near, abs(lines[i - 1] - query))
                if near <= tol[j]:
                    matched[r] += 1
        return matched, distinct

    @jit()
    def best(hits, cells, keep):
        """Indices of the ``keep`` cells with most hits; among as many, the largest reciprocal volume first; then
        the first given (the order of a stable sort on those two keys)."""
        levels = np.zeros(hits.max() + 2, np.int64)
        for h in hits:
            levels[h] += 1
        least, taken = len(levels) - 1, 0
        while taken < keep and least > 0:  # the fewest hits a kept cell can have
            least -= 1
            taken += levels[least]
        candidates = np.flatnonzero(hits >= least)
        volume = np.empty(len(candidates))
        for i in range(len(candidates)):
            row = cells[candidates[i]]
            v = row[0]
            for m in range(1, len(row)):
                v = v * row[m]
            volume[i] = v * row[0] if len(row) == 2 else v  # hexagonal, tetragonal: a a c
        by_volume = np.argsort(-volume, kind="mergesort")
        by_hits = np.argsort(-hits[candidates[by_volume]], kind="mergesort")
        return candidates[by_volume[by_hits]][:keep]

    @jit()
    def solve(inverse, rhs):
        """(choices * systems, parameters): inverse[a] @ rhs[c] for every choice c and system a, each sum taken
        in the order np.einsum takes it (terms 0 and 2 first), so that the trial cells are bit for bit those the
        bundles were fitted with."""
        systems, p, _ = inverse.shape
        out = np.empty((len(rhs), systems, p))
        for c in range(len(rhs)):
            for a in range(systems):
                for i in range(p):
                    if p == 3:
                        out[c, a, i] = (inverse[a, i, 0] * rhs[c, 0] + inverse[a, i, 2] * rhs[c, 2]
                                        + inverse[a, i, 1] * rhs[c, 1])
                    else:
                        out[c, a, i] = inverse[a, i, 0] * rhs[c, 0] + inverse[a, i, 1] * rhs[c, 1]
        return out.reshape(-1, p)

    return {"solve": solve, "best": best, "cubic": cubic, "uniaxial": uniaxial, "orthorhombic": orthorhombic,
            "lines_matched": lines_matched}


def cubic_hits(cells, s, tol, allowed) -> np.ndarray:
    return _kernels()["cubic"](cells, s, tol, allowed.table, float(allowed.values[0]))


def uniaxial_hits(cells, s, tol, allowed, l2) -> np.ndarray:
    return _kernels()["uniaxial"](cells, s, tol, allowed.table, float(allowed.values[0]), l2)


def orthorhombic_hits(cells, s, tol, allowed, squares) -> np.ndarray:
    return _kernels()["orthorhombic"](cells, s, tol, allowed.table, float(allowed.values[0]), squares)


def lines_matched(calc, s, tol, window) -> tuple[np.ndarray, np.ndarray]:
    """(lines of ``s`` matched, distinct calculated lines in ``window``) per row of ``calc``."""
    return _kernels()["lines_matched"](np.ascontiguousarray(calc, dtype=np.float64), np.asarray(s, np.float64),
                                       np.asarray(tol, np.float64), float(window[0]), float(window[1]))


def best_cells(hits: np.ndarray, cells: np.ndarray, keep: int) -> np.ndarray:
    """Indices of the ``keep`` best ``cells`` by ``hits``, then by reciprocal volume, then by order."""
    return _kernels()["best"](hits, np.ascontiguousarray(cells, dtype=np.float64), keep)


def solve_systems(inverse: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """(choices * systems, parameters) of the 2x2 or 3x3 ``inverse`` systems applied to each row of ``rhs``."""
    if inverse.shape[1] not in (2, 3):
        raise ValueError("2 or 3 metric parameters")
    return _kernels()["solve"](inverse, np.ascontiguousarray(rhs, dtype=np.float64))
