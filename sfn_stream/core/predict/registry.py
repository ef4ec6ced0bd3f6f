"""Which model bundle answers a request: bundles found by their cards, predictors loaded once per process.

    models = default_registry()                      # the bundles in sfn_stream.core.paths.models_dir()
    models.predictor("xanes", "Cu")                  # the XANES bundle that covers Cu
    models.predictor("xrd")                          # the PXRD bundle
    ModelRegistry.with_predictors(xanes=my_model)    # a given predictor for a kind (tests, experiments)

Each bundle's card says what it covers: ``kind`` and, for XANES, ``supported_absorbers``. Several XANES
bundles may coexist (one per metal, or one for all): the one covering the absorber with the fewest
absorbers wins, except for a request that lists the sample's elements without their amounts (what a
beamline usually knows): a card listing the absorber under ``preferred_for_elements_only`` wins then (the
measured reason sits in that card's ``registry`` note); so does a request naming the absorber alone (the
pure metal: a foil). A request with no composition at all goes to a card listing the absorber under
``preferred_without_composition`` (a bundle trained for that mode), else to the narrowest. An absorber no bundle covers
goes to the kind's default bundle, whose own check then says that the edge is not supported yet. A new kind of model registers its predictor class with
:func:`register_predictor`; its predictor takes a bundle path.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from sfn_stream.core.networks import CARD_FILE, WEIGHTS_FILE, BundleError
from sfn_stream.core.paths import models_dir
from ._predictors import XANES_BUNDLE, XRD_BUNDLE, PredictorError, XanesPredictor, XrdPredictor

PredictorFactory = Callable[[Path], Any]

# kind -> (predictor class, name of the kind's default bundle)
_PREDICTORS: dict[str, tuple[PredictorFactory, str]] = {
    "xanes": (XanesPredictor, XANES_BUNDLE),
    "xrd": (XrdPredictor, XRD_BUNDLE),
}


def register_predictor(kind: str, factory: PredictorFactory, default_bundle: str) -> None:
    """Teach the registry a kind of model: ``factory(bundle_path)`` builds its predictor, and
    ``default_bundle`` names the folder used when no card covers a request."""
    _PREDICTORS[kind] = (factory, default_bundle)


@dataclass(frozen=True)
class BundleCard:
    """What a bundle's card says it covers."""

    path: Path
    name: str
    kind: str
    supported_absorbers: tuple[str, ...] = ()
    preferred_for_elements_only: tuple[str, ...] = ()
    preferred_without_composition: tuple[str, ...] = ()

    def covers(self, absorber: str | None) -> bool:
        return absorber is not None and absorber in self.supported_absorbers


class ModelRegistry:
    """The bundles of one folder (``models_dir()`` by default), and predictors given by hand per kind."""

    def __init__(self, directory: str | Path | None = None, *, predictors: Mapping[str, Any] | None = None):
        self.directory = Path(directory) if directory is not None else models_dir()
        self._given = dict(predictors or {})
        self._cards: list[BundleCard] | None = None

    @classmethod
    def with_predictors(cls, directory: str | Path | None = None, **predictors) -> ModelRegistry:
        """A registry that answers the named kinds with the given predictors (``xanes=...``, ``xrd=...``)
        and the other kinds from the bundles."""
        return cls(directory, predictors=predictors)

    def cards(self) -> list[BundleCard]:
        """The bundles of the folder, by name (read once)."""
        if self._cards is None:
            self._cards = _read_cards(self.directory)
        return self._cards

    def bundle_path(self, kind: str, absorber: str | None = None, composition=None) -> Path:
        """The bundle that answers ``kind`` (for ``absorber``): the narrowest card covering the absorber (for an
        element list or the pure absorber, or for no composition, one preferring the absorber in that mode first), else
        the kind's default bundle (which may not exist: loading it then says so)."""
        of_kind = [card for card in self.cards() if card.kind == kind]
        covering = [card for card in of_kind if card.covers(absorber)]
        if covering and _elements_only(composition, absorber):
            covering = [card for card in covering if absorber in card.preferred_for_elements_only] or covering
        elif covering and composition is None:
            covering = [card for card in covering if absorber in card.preferred_without_composition] or covering
        if covering:
            return min(covering, key=lambda card: (len(card.supported_absorbers), card.name)).path
        default = _default_bundle(kind)
        named = [card for card in of_kind if card.name == default or card.path.name == default]
        if named or not of_kind:
            return named[0].path if named else self.directory / default
        return of_kind[0].path

    def predictor_for_edges(self, kind: str, absorbers):
        """The predictor of the narrowest bundle covering every absorber in ``absorbers`` (several edges of one
        sample); :class:`PredictorError` when no bundle covers them all."""
        absorbers = list(absorbers)
        if kind in self._given or len(absorbers) <= 1:
            return self.predictor(kind, absorbers[0] if absorbers else None)
        for absorber in absorbers:
            self._check_covered(kind, absorber)
        covering = [card for card in self.cards() if card.kind == kind and all(card.covers(a) for a in absorbers)]
        if not covering:
            raise PredictorError(f"no single {kind.upper()} bundle covers the edges {', '.join(absorbers)} together")
        best = min(covering, key=lambda card: (len(card.supported_absorbers), card.name))
        return load_predictor(kind, best.path)

    def predictor(self, kind: str, absorber: str | None = None, composition=None):
        """The predictor for ``kind`` (and ``absorber``; ``composition``, an element list or a formula, decides
        between bundles that prefer one input mode), loaded on first use."""
        if kind in self._given:
            return self._given[kind]
        self._check_covered(kind, absorber)
        return load_predictor(kind, self.bundle_path(kind, absorber, composition))

    def _check_covered(self, kind: str, absorber: str | None) -> None:
        """Say which absorbers the folder's bundles cover when none covers ``absorber``."""
        of_kind = [card for card in self.cards() if card.kind == kind and card.supported_absorbers]
        if absorber is None or not of_kind or any(card.covers(absorber) for card in of_kind):
            return
        covered = sorted({a for card in of_kind for a in card.supported_absorbers})
        raise PredictorError(f"no {kind.upper()} model supports the {absorber} K edge yet (the bundles in "
                             f"{self.directory} cover: {', '.join(covered)})")

    def preload(self) -> list[str]:
        """Load every bundle of the known kinds now, and warm up the predictors that can be (``warm_up``); return
        the reasons of those that failed (they fail again, recorded, when a run asks for them)."""
        problems = []
        for kind in _PREDICTORS:
            if kind in self._given:
                continue
            paths = [card.path for card in self.cards() if card.kind == kind] or [self.bundle_path(kind)]
            for path in paths:
                try:
                    warm_up = getattr(load_predictor(kind, path), "warm_up", None)
                    if warm_up is not None:
                        warm_up()
                except Exception as err:
                    problems.append(f"{type(err).__name__}: {err}")
        return problems


def default_registry() -> ModelRegistry:
    """The process-wide registry of the bundles in ``models_dir()``."""
    directory = models_dir()
    with _lock:
        registry = _registries.get(directory)
        if registry is None:
            registry = _registries[directory] = ModelRegistry(directory)
    return registry


def load_predictor(kind: str, path: str | Path):
    """The predictor of one bundle, loaded once per process and again when its card or weights change."""
    path = Path(path).resolve()
    stamp = _modification_times(path)
    with _lock:
        cached = _loaded.get((kind, path))
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:  # under the lock: two threads never load the same weights twice
            predictor = _factory(kind)(path)
        except BundleError as err:  # a request no model can answer: the caller's clear message, not a crash
            raise PredictorError(f"the {kind} model bundle cannot be used: {err}") from err
        _loaded[(kind, path)] = (stamp, predictor)
        return predictor


_lock = threading.RLock()
_loaded: dict[tuple[str, Path], tuple[tuple, Any]] = {}
_registries: dict[Path, ModelRegistry] = {}


def _factory(kind: str) -> PredictorFactory:
    try:
        return _PREDICTORS[kind][0]
    except KeyError:
        raise KeyError(f"no predictor is registered for {kind!r} (known: {', '.join(_PREDICTORS)})") from None


def _default_bundle(kind: str) -> str:
    _factory(kind)  # an unknown kind fails here, with the known ones
    return _PREDICTORS[kind][1]


def _modification_times(path: Path) -> tuple:
    """The card's and weights' modification times (None where missing: loading then says what lacks)."""
    stamps = []
    for name in (CARD_FILE, WEIGHTS_FILE):
        try:
            stamps.append((path / name).stat().st_mtime_ns)
        except OSError:
            stamps.append(None)
    return tuple(stamps)


def _elements_only(composition, absorber: str | None = None) -> bool:
    """Whether a request goes to a card preferring the absorber in elements-only mode: it lists the sample's
    elements without their amounts, or names the absorber alone (the metal: a foil, which the 3d bundle learned
    and the Cu bundle never saw). None (nothing known of the sample) does not; an unparsable composition is left
    to the predictor to refuse."""
    if composition is None:
        return False
    from ._composition import CompositionError, parse_elements

    try:
        elements, fractions = parse_elements(composition)
    except CompositionError:
        return False
    return bool(elements) and (fractions is None or set(elements) == {absorber})


def _read_cards(directory: Path) -> list[BundleCard]:
    cards = []
    for card_path in sorted(directory.glob(f"*/{CARD_FILE}")):
        try:
            card = json.loads(card_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # an unreadable card is reported when its bundle is asked for by name
        if not isinstance(card, dict) or "kind" not in card:
            continue
        cards.append(BundleCard(path=card_path.parent, name=str(card.get("name", card_path.parent.name)),
                                kind=str(card["kind"]),
                                supported_absorbers=tuple(card.get("supported_absorbers") or ()),
                                preferred_for_elements_only=tuple(card.get("preferred_for_elements_only") or ()),
                                preferred_without_composition=tuple(card.get("preferred_without_composition") or ())))
    return cards
