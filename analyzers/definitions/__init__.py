"""Definitions: loading analyzers, procedures and conversations from YAML/JSON with located
problems, the load-time checks, CEL expressions, trigger patterns and trigger evaluation."""
