"""`python scripts/teardown_audit.py`: what a stack left after `pulumi destroy`.

A thin wrapper: the code and its usage are phi3_infra.cli.teardown_audit (installed entry point
`phi3-teardown-audit`).
"""

import sys

from phi3_infra.cli.teardown_audit import main

if __name__ == "__main__":
    sys.exit(main())
