"""Benchmarks and workloads for leadpulse: the seeded IDX event simulator lives here."""
