"""The core both sides use: spectra, chemistry, simulation, networks and bundles, predictors, structure
inference. Knows nothing of Bluesky or Tiled (import-linter contracts in pyproject.toml)."""
