"""Inventory connectors: each turns a platform's API (or a file, or agent reports) into a Snapshot."""
