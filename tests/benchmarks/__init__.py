"""Benchmarks of DnaSpawner's profile provisioning against the old platform's method.

Not part of the test gate: nothing here is named ``test_*``, so pytest collects nothing.
Run with ``.venv/bin/python -m tests.benchmarks`` (see ``BENCHMARKS.md``).
"""
