"""Policy pack entry point; the rules live in phi3_policy beside it, shared with the tests and the
offline plan (which install this folder as the package phi3-policy).

The engine runs the pack as `python -m pulumi.policy ENGINE infra/policy`, which runs this folder
with runpy.run_path; that puts the folder first on sys.path, so phi3_policy imports as it is
(pulumi/pulumi sdk/python/dist/pulumi-analyzer-policy-python, sdk/python/lib/pulumi/policy/
__main__.py).
"""

from phi3_policy import build_policy_pack

build_policy_pack()
