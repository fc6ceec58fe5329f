"""`python scripts/expire_stacks.py`: destroy and audit expired stacks.

A thin wrapper: the code and its usage are phi3_infra.cli.expire_stacks (installed entry point
`phi3-expire-stacks`).
"""

import sys

from phi3_infra.cli.expire_stacks import main

if __name__ == "__main__":
    sys.exit(main())
