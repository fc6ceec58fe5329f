"""`python scripts/smoke_test.py`: one chat against a deployed endpoint.

A thin wrapper: the code and its usage are phi3_infra.cli.smoke_test (the dev venv's; it needs the
openai client, phi3-infra's `tools` extra).
"""

import sys

from phi3_infra.cli.smoke_test import main

if __name__ == "__main__":
    sys.exit(main())
