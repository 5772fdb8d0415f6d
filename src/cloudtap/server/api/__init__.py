"""The server's HTTP API (FastAPI): ingest, query, health. Build it with :func:`create_app`."""
