"""Against the real Kafka broker and ClickHouse server the session fixtures start."""
