"""Procedures, pure: matching a procedure to a conversation, adherence (procedure + event log ->
verdicts), and capture of candidate procedures from successful conversations."""
