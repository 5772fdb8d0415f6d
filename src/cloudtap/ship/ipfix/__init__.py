"""IPFIX export of flow records (RFC 7011, biflows per RFC 5103; docs/ipfix.md).

Import what you need: ``exporter.IpfixExporter`` (one collector, the CLI), ``sink.IpfixTee`` (the agent,
beside its sink), ``encoder.IpfixEncoder`` (messages only), ``elements`` (the templates).
"""
