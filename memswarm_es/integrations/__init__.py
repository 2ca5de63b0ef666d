"""Bridges from agent frameworks and protocols to a shared memory; a top floor, like the
command line: each bridge needs its own extra (``memswarm[mcp]`` for :mod:`.mcp`)."""
