"""The beamline side: the Bluesky plugin (``plugin``), per-kind analyses (``analyses``), after-stop
consumers (``consumers``), the Tiled server and queries (``catalog``), and the documents they add
(``documents``: derived streams, the stop summary's schema).

Never imports the offline side (corpus, training, evaluation) or the simulated beamline.
"""
