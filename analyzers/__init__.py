"""posthoc analyzers."""
