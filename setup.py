"""Build the Cython core (fastmesh/_core/*.pyx).

Environment switches, in the MagicStack style:
  FASTMESH_DEBUG=1      linetrace + annotate + the FASTMESH_DEBUG C macro (for profiling)
  FASTMESH_ANNOTATE=1   write cython -a HTML next to each .pyx
  FASTMESH_NO_STATS=1   compile the per-request counters out (benchmark of the metrics cost)
"""
import glob
import os

from setuptools import Extension, setup

CYTHON_MIN = (3, 1)


def _cython_extensions():
    try:
        import Cython
        from Cython.Build import cythonize
    except ImportError as exc:  # pragma: no cover - build-system.requires has Cython
        raise SystemExit("fastmesh needs Cython>=3.1 to build: pip install 'Cython>=3.1,<4'") from exc
    version = tuple(int(p) for p in Cython.__version__.split(".")[:2])
    if version < CYTHON_MIN:
        raise SystemExit(f"fastmesh needs Cython>=3.1, found {Cython.__version__}")

    debug = os.environ.get("FASTMESH_DEBUG") == "1"
    annotate = debug or os.environ.get("FASTMESH_ANNOTATE") == "1"
    no_stats = os.environ.get("FASTMESH_NO_STATS") == "1"

    directives = {
        "language_level": 3,
        "boundscheck": False,
        "wraparound": False,
        "initializedcheck": False,
        "cdivision": True,
        "embedsignature": True,
    }
    macros = [("FASTMESH_DEBUG", "1" if debug else "0"),
              ("FASTMESH_STATS", "0" if no_stats else "1")]
    if debug:
        directives["linetrace"] = True
        macros += [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")]

    exts = []
    for pyx in sorted(glob.glob("fastmesh/_core/*.pyx")):
        name = pyx[:-4].replace("/", ".")
        exts.append(Extension(
            name, [pyx],
            include_dirs=["fastmesh/_core"],
            define_macros=macros,
            extra_compile_args=["-O2", "-Wno-unused-function", "-Wno-unreachable-code"],
        ))
    return cythonize(exts, compiler_directives=directives, annotate=annotate,
                     force=os.environ.get("FASTMESH_CYTHON_ALWAYS") == "1")


setup(ext_modules=_cython_extensions())
