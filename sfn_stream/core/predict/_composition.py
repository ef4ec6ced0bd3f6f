"""Parse what users say about the sample: an element list ("Cu,O") or a formula ("Fe2O3")."""

from __future__ import annotations

from typing import Sequence


class CompositionError(ValueError):
    """The element list or formula cannot be understood."""


def parse_elements(composition: str | Sequence[str]) -> tuple[list[str], dict[str, float] | None]:
    """Return ``(elements, fractions)``; fractions are ``None`` when only the element set is known.

    >>> parse_elements("Fe2O3")
    (['Fe', 'O'], {'Fe': 0.4, 'O': 0.6})
    >>> parse_elements("Cu, O")
    (['Cu', 'O'], None)
    >>> parse_elements("fe,CR,o")
    (['Fe', 'Cr', 'O'], None)
    """
    from pymatgen.core import Composition, Element

    from sfn_stream.core.spectra import element_symbol

    if isinstance(composition, str):
        text = composition.strip()
        if not text:
            raise CompositionError("empty composition: give elements (Cu,O) or a formula (Cu2O)")
        if "," in text or " " in text:
            symbols = [s.strip() for s in text.replace(" ", ",").split(",") if s.strip()]
        else:
            try:
                comp = Composition(text)
            except Exception as err:  # pymatgen raises several types for bad formulas
                raise CompositionError(f"cannot parse the formula {text!r}: {err}") from err
            total = comp.num_atoms
            fractions = {el.symbol: round(amount / total, 6) for el, amount in comp.items()}
            return list(fractions), fractions
    else:
        symbols = [str(s).strip() for s in composition]
    symbols = [element_symbol(s) if s.isalpha() else s for s in symbols]  # in a list, 'fe' can only be Fe
    unknown = [s for s in symbols if not Element.is_valid_symbol(s)]
    if unknown:
        raise CompositionError(f"unknown element symbol(s): {', '.join(unknown)}")
    if len(set(symbols)) != len(symbols):
        raise CompositionError(f"repeated element in {symbols}")
    return symbols, None


def element_set(composition: str | Sequence[str]) -> list[str]:
    """The sorted element symbols of an element list or a formula, its amounts dropped ("Fe2O3" -> ['Fe', 'O']).
    A formula's symbols go through the element-list check too (pymatgen accepts some that are not elements)."""
    return sorted(parse_elements(parse_elements(composition)[0])[0])
