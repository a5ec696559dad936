"""`python -m ops.status`: see ops/status/cli.py."""

import sys

from ops.status.cli import main

if __name__ == "__main__":
    sys.exit(main())
