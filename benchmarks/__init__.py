"""idgen's benchmark suite: every figure a ratio against a baseline from the same run.

Run it with ``python -m benchmarks.run`` (``--quick`` for a CI smoke run); see
``benchmarks/RESULTS.md`` for the figures on the reference machine.
"""
