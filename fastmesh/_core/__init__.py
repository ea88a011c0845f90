"""Cython core: everything a request touches (parsing, pools, the pump, counters).

Nothing outside ``fastmesh`` imports these modules directly.
"""
