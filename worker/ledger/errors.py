"""What the ledger refuses, grouped by who must act.

Every message names the run (or conversation) and the status it was found in, so a line in a log
or a CLI error is enough to act on without opening the database.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base class: the ledger could not do what was asked."""


class RunNotFound(LedgerError):
    """No analysis run has this id (a mistyped id, or a message from another database)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"no analysis run with id {run_id!r}")


class ConversationNotFound(LedgerError):
    """No stored conversation (or conversation version) has this primary key."""

    def __init__(self, conversation_pk: int, *, what: str = "conversation") -> None:
        self.conversation_pk = conversation_pk
        super().__init__(f"no stored {what} with pk {conversation_pk!r}")


class SnapshotNotFound(LedgerError):
    """No analyzer snapshot has this spec hash."""

    def __init__(self, spec_hash: str) -> None:
        self.spec_hash = spec_hash
        super().__init__(f"no analyzer snapshot with spec_hash {spec_hash!r}")


class InvalidTransition(LedgerError):
    """The run exists but its status does not allow the requested change."""

    def __init__(self, run_id: str, status: str, action: str, allowed: str) -> None:
        self.run_id = run_id
        self.status = status
        self.action = action
        super().__init__(f"cannot {action} run {run_id!r}: it is {status}, and only {allowed}")
