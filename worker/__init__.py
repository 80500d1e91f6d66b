"""posthoc worker."""
