"""Tiled: the embedded server and queries over the predictions."""

from ._queries import runs_where, samples_where
from ._server import TiledService, TiledServiceError

__all__ = ["TiledService", "TiledServiceError", "runs_where", "samples_where"]
