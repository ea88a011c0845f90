"""`python -m benchmarks.micro`: lists the micro-benchmarks that exist and how to run them.

A suite runner over all of them is not written yet; rather than pretend to measure, this
names the modules present and exits non-zero (see README.md for the three planned ones).
"""

import pkgutil
import sys
from pathlib import Path

if __name__ == "__main__":
    here = Path(__file__).parent
    mods = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))
    lines = ["benchmarks.micro: no suite runner yet (planned: head parse, pool, TLS pump; see benchmarks/micro/README.md)."]
    if mods:
        lines.append("Run one directly: " + ", ".join(f"python -m benchmarks.micro.{m}" for m in mods))
    lines.append("The end-to-end benchmark is `python -m benchmarks.run`.")
    sys.exit("\n".join(lines))
