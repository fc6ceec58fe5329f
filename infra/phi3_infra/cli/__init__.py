"""The command-line tools over the program: plan, preflight, smoke test, teardown audit, expiry."""
