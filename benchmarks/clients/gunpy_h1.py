"""``gunpy-h1-pipelined``: gunpy on HTTP/1.1, for the HTTP/2 workload's comparison
(the same 100 GETs in flight on one connection, pipelined).  The code is in
``gunpy_client``; this module only gives it its own name in the tables."""

from .gunpy_client import http2_concurrent_h1

WORKLOADS = {"http2_concurrent": http2_concurrent_h1}
