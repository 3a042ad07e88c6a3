"""hallstats: exact service-hall figures from window-terminal events.

Data flows ``terminals`` -> ``schemas`` (the contract) -> ``streams`` (the worker)
-> ClickHouse -> ``consumers`` (finalization, API, bulletin). This package is both
ends of the layer contract in ``pyproject.toml``: the leaf everyone uses (settings,
errors, the Kafka and ClickHouse client setup) and, in ``hallstats.cli``, the top
that composes the rest.
"""
