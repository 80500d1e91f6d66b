"""Delivery of analysis results: Slack, signed webhooks, JSONL files; the delivery task.

`render` is pure (Block Kit from a result); `slack`, `webhooks` and `jsonl` are the thin edges,
one per external system; `fake_slack` is the fake Slack Web API tests drive the real SDK against.
"""
