"""`python -m synthface.cli ...` (also under torchrun: `torchrun -m synthface.cli train recognition ...`)."""

import sys

from .app import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
