"""`python scripts/preflight.py`: the quota and name preflight.

A thin wrapper: the code and its usage are phi3_infra.cli.preflight (installed entry point
`phi3-preflight`).
"""

import sys

from phi3_infra.cli.preflight import main

if __name__ == "__main__":
    sys.exit(main())
