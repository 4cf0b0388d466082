"""The clients the harness compares, one module each (see ``_common`` for the interface).

``CLIENTS`` maps the name printed in the tables to the module; every module's
``WORKLOADS`` says which workloads it takes part in.  Each client always runs in
its own process (``benchmarks.worker``).  ``gunpy-h1-pipelined`` is gunpy on
HTTP/1.1 in the HTTP/2 workload (``http2_concurrent``), where ``gunpy`` speaks h2c."""

CLIENTS = {
    "gunpy": "gunpy_client",
    "gunpy-h1-pipelined": "gunpy_h1",
    "websocket-client": "websocket_client",
    "websockets-sync": "websockets_sync",
    "websockets-async": "websockets_async",
    "aiohttp": "aiohttp_client",
    "urllib3": "urllib3_client",
    "httpx": "httpx_client",
    "h11-floor": "h11_floor",
    "h2-floor": "h2_floor",
    "wsproto-floor": "wsproto_floor",
    "tcp-floor": "tcp_floor",
}

# The distribution that provides each client (for the versions in the results).
DISTRIBUTIONS = {
    "gunpy": ["gunpy", "pykka", "h11", "wsproto", "h2"],
    "gunpy-h1-pipelined": ["gunpy"],
    "websocket-client": ["websocket-client"],
    "websockets-sync": ["websockets"],
    "websockets-async": ["websockets"],
    "aiohttp": ["aiohttp"],
    "urllib3": ["urllib3"],
    "httpx": ["httpx", "httpcore", "h2"],
    "h11-floor": ["h11"],
    "h2-floor": ["h2"],
    "wsproto-floor": ["wsproto"],
    "tcp-floor": [],
}
