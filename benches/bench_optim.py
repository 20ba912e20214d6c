"""One optimizer step: lowfp's fused low-bit optimizers beside torch, torchao, bitsandbytes.

A thin wrapper over :mod:`lowfp.bench.optim` (also ``lowfp bench optim``):

    PYTHONPATH=python python3 benches/bench_optim.py [--n 16777216] [--threads 2] [--repeat 5]
"""

import sys

from lowfp.bench.optim import main

if __name__ == "__main__":
    sys.exit(main())
