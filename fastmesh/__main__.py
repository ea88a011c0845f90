"""`python -m fastmesh ...` is the `fastmesh` command."""

import sys

from fastmesh.cli import main

sys.exit(main())
