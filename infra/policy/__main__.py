"""Policy pack entry point; the rules live in phi3_infra.policies, shared with tests and plan."""

import sys
from pathlib import Path

# The engine runs the pack from this folder; the rules sit in the infra package next to it.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from phi3_infra.policies import build_policy_pack

build_policy_pack()
