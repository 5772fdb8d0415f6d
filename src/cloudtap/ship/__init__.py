"""Shipping records from agents to the server: wire format, transport, on-disk spool."""
