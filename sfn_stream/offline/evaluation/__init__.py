"""Every benchmark and evaluation; timings live here, never in tests.

The modules of :data:`BENCHMARKS` (``sfn-stream bench NAME``) each have ``main(argv) -> int`` and parse
their own options. ``larch_compare`` needs xraylarch, which is not a dependency: run it as
``python -m sfn_stream.offline.evaluation.larch_compare`` from a Python that has it. The CLI calls the
others' functions: ``stream_overhead`` (``bench stream``), ``feff_throughput`` (``dataset bench``) and
``structure_benchmark`` (``evaluate structure``).
"""

# name on the command line -> (module, one-line help)
BENCHMARKS = {
    "measured-xanes": ("measured_xanes", "preprocess every measured XANES file of ../shared (table, foil E0)"),
    "feff-xanes": ("feff_xanes", "preprocess all OmniXAS Cu FEFF site spectra (usable fraction, E0 spread)"),
    "larch-compare": ("larch_compare", "our E0/normalisation against xraylarch's (needs xraylarch)"),
    "feff-cu2o": ("feff_cu2o_reproduction", "rerun raw_example_mp-361_Cu2O's feff.inp and compare (hours)"),
    "xanes-model": ("xanes_model_eval", "XANES bundle: test-split metrics, measured dev set, inference time"),
    "xrd-model": ("xrd_model_eval", "XRD bundle: test-split metrics, measured dev patterns, per-frame time"),
    "agent": ("agent_benchmark", "next-edge agent vs random / fixed / all-edge orders on multi-metal test samples"),
    "edge-positions": ("edge_positions", "edge positions of corpus FEFF10 vs measured spectra per metal and valence"),
    "faults": ("fault_benchmark", "Tiled outages, killed and exited sessions, back-to-back runs: lost/duplicated"),
}
