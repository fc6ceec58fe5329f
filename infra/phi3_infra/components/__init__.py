"""The Pulumi components of one stack, AVM-style: each takes the IDs it uses and gives IDs out.

Only the composition root (phi3_infra.program) reads the stack configuration.
"""
