"""Micro-benchmarks of the request path's parts, each against a baseline measured in the
same process; `python -m benchmarks.micro` runs them all (see README.md in this folder)."""
