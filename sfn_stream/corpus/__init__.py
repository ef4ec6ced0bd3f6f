"""The versioned XANES + PXRD training corpus: structures, FEFF10 spectra, stick patterns, labels."""
