"""`python -m synthface ...`: the same command as the `synthface` console script."""

import sys

from .cli import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
