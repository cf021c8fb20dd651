"""Benchmarks of exchange-mount, each reported as a ratio to a bound measured in the same run.

Run them with ``python -m bench`` (``--quick`` for smaller sizes); see docs/performance.md.
"""
