"""The Tiled writer the plugin forwards to."""

from __future__ import annotations


def make_tiled_writer(client, *, batch_size: int | None = None, **kwargs):
    """A :class:`bluesky_tiled_plugins.TiledWriter` set up for sfn-stream's streams.

    ``max_array_size=0`` stores every array (probabilities, windows) as an array node: small
    arrays otherwise stay in the SQL table and read back as strings.
    """
    from bluesky_tiled_plugins import TiledWriter

    if batch_size is not None:
        kwargs["batch_size"] = batch_size
    kwargs.setdefault("max_array_size", 0)
    return TiledWriter(client, **kwargs)
