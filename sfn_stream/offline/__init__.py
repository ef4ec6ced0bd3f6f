"""The offline side: the FEFF10/PXRD corpus, training of the bundles, evaluation and benchmarks.

Never imported by the live side."""
