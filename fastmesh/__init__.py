"""fastmesh: a per-host service-mesh proxy, drop-in for linkerd 1.x configs.

The per-request path lives in the Cython extensions of ``fastmesh._core``; the Python
modules here (config, naming, routers, admin) set it up and feed its route cache.
"""

__version__ = "0.1.0"
