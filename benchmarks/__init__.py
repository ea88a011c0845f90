"""Benchmarks: hello→world across two nodes, fastmesh beside Envoy, nginx, a plain-Python
reference proxy and direct (``python -m benchmarks.run``; see benchmarks/README.md).

Benchmarks measure, tests assert behaviour: every target here is a ratio to a peer
measured in the same invocation, never an absolute time.
"""
