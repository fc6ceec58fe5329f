"""`python scripts/prepare_data.py`: convert, validate and split chat data.

A thin wrapper: the code and its usage are phi3_trainer.prepare_data (installed entry point
`phi3-prepare-data`).
"""

import sys

from phi3_trainer.prepare_data import main

if __name__ == "__main__":
    sys.exit(main())
