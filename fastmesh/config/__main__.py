"""``python -m fastmesh.config CONFIG``: validate a config (see :mod:`fastmesh.config.check`)."""

import sys

from .check import main_check

if __name__ == "__main__":
    sys.exit(main_check())
