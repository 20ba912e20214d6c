"""Benchmarks of lowfp against whichever anchors are installed: ``lowfp bench``.

``lowfp.bench.codecs``: codec throughput (encode, decode, stochastic rounding, packing,
blockwise 8-bit) beside ml_dtypes, torch, qtorch, gfloat and bitsandbytes.
``lowfp.bench.optim``: one optimizer step beside torch, torchao and bitsandbytes.
Each module has ``main(argv) -> int``, prints Markdown tables on stdout and a progress line on
stderr; ``--quick`` is a seconds-long smoke run. ``benches/bench_*.py`` are thin wrappers.
"""

__all__ = ["codecs", "optim"]
