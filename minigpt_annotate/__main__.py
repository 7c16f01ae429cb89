"""`python -m minigpt_annotate …` is the `minigpt-annotate` command."""

import sys

from .cli import main

sys.exit(main())
