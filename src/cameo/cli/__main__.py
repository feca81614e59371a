"""``python -m cameo.cli``: the ``cameo`` command."""

import sys

from . import main

sys.exit(main())
