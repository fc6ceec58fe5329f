"""Offline tooling around the program: the plan under Pulumi's mocks, pricing, the teardown
audit and the expiry of stacks.
"""
