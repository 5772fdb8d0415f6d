"""An ASGI app on a real loopback socket for tests: uvicorn in a thread, on a free port.

Usage: ``from uvicorn_thread import serve_in_thread`` (tests/ is on sys.path); ``with serve_in_thread(app)
as url: ...``. ``ssl_certfile``/``ssl_keyfile`` serve HTTPS; ``lifespan="off"`` skips the app's lifespan.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def serve_in_thread(app: Any, lifespan: str = "auto", **ssl: Any) -> Iterator[str]:
    """``app`` served on 127.0.0.1 until the block ends; yields its base URL (``https`` with ``ssl``)."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan=lifespan, **ssl)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"{'https' if ssl else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
