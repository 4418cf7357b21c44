"""Benchmarks: gptimage-async against the client people write by hand.

``python -m benchmarks`` runs every scenario against the built-in simulator
and rewrites ``benchmarks/RESULTS.md``; ``python -m benchmarks --help`` lists
the options. ``baseline`` is the hand-written client, ``scenarios`` the
measurements, ``report`` the table and the targets.
"""
