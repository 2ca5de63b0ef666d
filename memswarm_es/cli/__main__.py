"""``python -m memswarm_es.cli``: the ``memswarm`` command."""

import sys

from . import main

sys.exit(main())
