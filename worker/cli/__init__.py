"""The `posthoc` command line: one module per command group, all registered on one Typer app.

A new command group is a module here that adds its commands to `worker.cli.commands.app`, and
one import line below.
"""

from worker.cli import (
    beat,  # noqa: F401 - registers `posthoc beat`
    deliveries,  # noqa: F401 - registers `posthoc deliveries`
    diff,  # noqa: F401 - registers `posthoc diff`
    intake_admin,  # noqa: F401 - registers `posthoc api-keys`, `intake`
    operations,  # noqa: F401 - registers `posthoc migrate`, `broker-config`
    procedures,  # noqa: F401 - registers `posthoc procedures`
    rerun,  # noqa: F401 - registers `posthoc rerun`, `jobs`
    serve,  # noqa: F401 - registers `posthoc serve`
)
from worker.cli.commands import app, main

__all__ = ["app", "main"]
