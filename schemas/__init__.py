"""The contract between terminals and hallstats: event model, counter catalog,
calendar rules and ClickHouse DDL. Nothing here talks to a service."""
