"""Pure logic and config files: no services."""
