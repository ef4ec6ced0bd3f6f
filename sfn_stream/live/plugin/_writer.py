"""The Tiled writer the plugin forwards to (made in ``sfn_stream.live.delivery``, re-exported here)."""

from __future__ import annotations

from sfn_stream.live.delivery import TiledTarget, make_tiled_writer

__all__ = ["TiledTarget", "make_tiled_writer"]
