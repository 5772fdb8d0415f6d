"""The cloudtap server: ingest, storage (ClickHouse / embedded chDB), query API, and later the controller."""
