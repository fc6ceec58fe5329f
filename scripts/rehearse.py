"""`python scripts/rehearse.py`: the stack's job and deployment, run here.

A thin wrapper: the code and its usage are phi3_rehearsal.rehearse (installed entry point
`phi3-rehearse`).
"""

import sys

from phi3_rehearsal.rehearse import main

if __name__ == "__main__":
    sys.exit(main())
