"""What reads downstream of the worker: ClickHouse sink, finalization, bulletin reader."""
