"""Benchmarks that print numbers and write them to a file (``geofm bench``, ``bench-train``).
"""
