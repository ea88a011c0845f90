"""`python -m benchmarks.micro`: refuses clearly until the micro-benchmarks exist."""

import sys

if __name__ == "__main__":
    sys.exit(
        "benchmarks.micro: not written yet (head parse, pool, TLS pump; see benchmarks/micro/README.md). "
        "The end-to-end benchmark is `python -m benchmarks.run`."
    )
