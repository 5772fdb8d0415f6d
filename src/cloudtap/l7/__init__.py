"""Application requests parsed from packet payloads: HTTP/1.x, DNS, MySQL, PostgreSQL, Redis.

Decoded packets (and the frames they point into) go to a :class:`RequestParser`; it detects each
flow's protocol by content, parses requests and responses in numba kernels, pairs them per flow and
emits ``L7_DTYPE`` records (:mod:`cloudtap.schema.request`). See ``docs/requests.md``.
"""

from cloudtap.l7.parser import RequestConfig, RequestParser
from cloudtap.l7.pipeline import RequestResult, parse_file, request_summary
from cloudtap.l7.records import requests_to_arrow
from cloudtap.l7.writers import write_requests

__all__ = [
    "RequestConfig",
    "RequestParser",
    "RequestResult",
    "parse_file",
    "request_summary",
    "requests_to_arrow",
    "write_requests",
]
