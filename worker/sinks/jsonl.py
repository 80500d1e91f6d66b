"""The JSONL file sink: one line per delivery, appended and fsynced.

A line is written with one `write` on a file opened in append mode (`O_APPEND`), so concurrent
writers on one host never interleave inside a line, and fsynced before the delivery is marked
delivered. A crash between the fsync and the ledger update means the retry appends the line
again; each line carries its `delivery_id`, so readers deduplicate on it (a file has no way to
look up and update what it already holds, the way Slack and the ledger do).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from worker.sinks.errors import RetryLater, Undeliverable


def append_line(path: Path, record: dict[str, Any]) -> None:
    """Append `record` as one JSON line to `path` (created with its directory) and fsync it."""
    line = json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    except (IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        raise Undeliverable(f"cannot open {str(path)!r} for appending: {exc.strerror}") from exc
    except OSError as exc:
        raise RetryLater(f"cannot open {str(path)!r}: {exc.strerror}", reason="io") from exc
    try:
        data = line.encode()
        written = os.write(descriptor, data)
        if written != len(data):
            raise RetryLater(f"short write to {str(path)!r}", reason="io")
        os.fsync(descriptor)
    except OSError as exc:
        raise RetryLater(f"cannot append to {str(path)!r}: {exc.strerror}", reason="io") from exc
    finally:
        os.close(descriptor)
