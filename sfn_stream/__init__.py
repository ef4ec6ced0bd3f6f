"""sfn-stream: live XANES + PXRD predictions for Bluesky beamlines.

Layers (enforced by import-linter contracts in pyproject.toml):

- ``spectra``    preprocessing of measured and computed spectra (no Bluesky, no torch)
- ``chemistry``  element descriptors and structure-derived labels (no Bluesky, no torch)
- ``simulation`` FEFF10 runner and PXRD simulation
- ``nn``         neural networks and model bundles (no Bluesky, no Tiled)
- ``predict``    predictors that compose preprocessing and networks
- ``training``   building training sets and training the bundles in ``models/``
- ``streaming``, ``beamline``, ``catalog``  Bluesky callbacks, simulated beamline, Tiled
- ``cli``        the ``sfn-stream`` command
"""

__version__ = "0.1.0"
