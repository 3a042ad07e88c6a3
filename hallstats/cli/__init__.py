"""The top of the flow: the ``hallstats`` command, the demo and the worker's process
composition. Everything else is imported from here; nothing imports this."""

from hallstats.cli.main import main

__all__ = ["main"]
