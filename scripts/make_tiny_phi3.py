"""`python scripts/make_tiny_phi3.py`: a tiny random Phi-3.

A thin wrapper: the code and its usage are phi3_rehearsal.tiny_phi3 (installed entry point
`phi3-make-tiny-phi3`).
"""

import sys

from phi3_rehearsal.tiny_phi3 import main

if __name__ == "__main__":
    sys.exit(main())
