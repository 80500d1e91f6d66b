"""The model edge: the `ModelClient` protocol the runtime speaks, the Anthropic adapter (the only
module that imports `anthropic`), model profiles and prices."""
