"""`python -m modelhost`: the same as the `modelhost` command."""

import sys

from modelhost.cli import main

sys.exit(main())
