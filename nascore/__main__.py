"""``python -m nascore`` (what ``torchrun -m nascore run CONFIG`` launches)."""

import sys

from nascore.cli import main

sys.exit(main())
