"""A `ServerProcesses` node whose children answer every request with their pid (for
`test_server_processes.py`): `python -m tests.worker.http.pid_server PROCESSES`, prints its
port once every child is started."""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

from worker.http.processes import ServerProcesses


async def pid_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = str(os.getpid()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def serve_pids(sock: socket.socket) -> None:
    import uvicorn

    config = uvicorn.Config(
        "tests.worker.http.pid_server:pid_app", log_config=None, access_log=False, lifespan="off"
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    from worker.observability.logging import configure_logging

    configure_logging("warning", "json")
    processes = ServerProcesses(serve_pids, "127.0.0.1", 0, int(sys.argv[1]))
    sys.exit(processes.run(ready=lambda port: print(port, flush=True)))
