"""Small data files shipped with the package (the demo sample)."""
