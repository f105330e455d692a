"""`python -m insightface_align COMMAND ...`: the same as the `insightface-align` command."""
import sys

from insightface_align.cli import main

sys.exit(main())
