"""Flow storage: one ClickHouse code path for embedded chDB and for a ClickHouse server or cluster."""
