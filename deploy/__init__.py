"""Local single-node stack (Kafka KRaft + ClickHouse) for development and tests."""
