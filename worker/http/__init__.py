"""`posthoc serve`: the HTTP intake. The ASGI app, the webhook adapters per platform, tenant API
keys and the delivery log. Adapters and signature checks are pure (`adapters/`); the app is the
thin edge that reads bytes, calls them, and records through `worker.intake`."""
