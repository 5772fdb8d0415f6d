"""Virtual packet broker: copies of selected packets to tools over VXLAN, GRE, ERSPAN II/III or raw.

See docs/broker.md.
"""
