"""Micro-benchmarks of the Cython core (not written yet: see README.md in this folder)."""
