"""Writers of flow records in bulk: JSON lines, Arrow tables (for CSV/Parquet) and the top flows.

Per-record work is done by numba formatters or numpy; import the submodule you need
(``writers.jsonl``, ``writers.arrow``, ``writers.top``) so a command loads only what it uses.
"""
