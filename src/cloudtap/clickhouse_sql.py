"""ClickHouse SQL text: quoted identifiers and string literals, IPv6 columns rendered as the agent's text."""

from __future__ import annotations


def ident(name: str) -> str:
    """Quote an identifier."""
    return "`" + name.replace("`", "``") + "`"


def quote(text: str) -> str:
    """Quote a string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def ip_text_sql(expr: str) -> str:
    """SQL rendering an IPv6 column as the agent's text (dotted quad for IPv4-mapped addresses)."""
    return f"replaceRegexpOne(IPv6NumToString({expr}), '^::ffff:([0-9]+\\\\.[0-9]+\\\\.[0-9]+\\\\.[0-9]+)$', '\\\\1')"
