"""The engine: claim -> run -> complete, retries, the Celery app and its worker service, the
fleet-wide model rate limit."""
