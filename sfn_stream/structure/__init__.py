"""Structure inference from spectra-derived constraints (formulas, templates, substitution, ranking)."""
