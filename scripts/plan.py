"""`python scripts/plan.py`: the offline plan.

A thin wrapper: the code and its usage are phi3_infra.cli.plan (the dev venv's; it needs the policy
rules, phi3-infra's `tools` extra).
"""

import sys

from phi3_infra.cli.plan import main

if __name__ == "__main__":
    sys.exit(main())
