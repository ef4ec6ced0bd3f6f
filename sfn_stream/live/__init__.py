"""The beamline side: the Bluesky plugin, per-kind analyses, after-stop consumers, Tiled server and queries.

Never imports the offline side (corpus, training, evaluation) or the simulated beamline.
"""
