"""Kills, rebalances, broker and ClickHouse outages on the real stack."""
