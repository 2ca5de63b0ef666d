#!/usr/bin/env python3
"""Set up and run MemSwarm with nothing but python3: makes .venv, installs, then runs.

    python3 scripts/dev.py demo          # the multi-agent demo (SQLite, log and view in one file)
    python3 scripts/dev.py test [ARGS]   # ruff, mypy, then the whole test suite (pytest ARGS)
    python3 scripts/dev.py run CMD ...   # any command inside the environment

This file only checks the Python version, in syntax every Python parses, so that an old one
gets one clear line instead of a SyntaxError; the work is in ``devenv.py`` beside it.
"""

import sys

if sys.version_info < (3, 10):
    sys.exit("scripts/dev.py needs Python 3.10 or later; %s is Python %d.%d"
             % (sys.executable, sys.version_info[0], sys.version_info[1]))

from devenv import main  # only once the version is known to be good

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], __doc__ or ""))
