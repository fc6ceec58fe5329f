"""Azure operations: plain functions over one ARM client, run inside `pulumi up` and by the tools.

No Pulumi resources here: the sign-in, the REST API versions, the preflight, the waits and the
operations the dynamic steps (phi3_infra.steps) call.
"""
