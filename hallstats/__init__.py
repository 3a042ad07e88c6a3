"""hallstats: exact service-hall figures from window-terminal events.

Data flows terminals -> ``schemas`` (the contract) -> ``streams`` (Faust worker)
-> ``consumers`` (ClickHouse sink, finalization, bulletin). This package holds
what cuts across them: settings, errors, the CLI and the sample generator.
"""
