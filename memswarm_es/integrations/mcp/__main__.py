"""``python -m memswarm_es.integrations.mcp``: the MCP server."""

import sys

from . import main

sys.exit(main())
