"""Throughput of lowfp's codecs against ml_dtypes, torch, qtorch, gfloat and bitsandbytes.

A thin wrapper over :mod:`lowfp.bench.codecs` (also ``lowfp bench codecs``):

    PYTHONPATH=python python3 benches/bench_codecs.py [--n N] [--threads 1,2] [--repeat 5]
"""

import sys

from lowfp.bench.codecs import main

if __name__ == "__main__":
    sys.exit(main())
