"""A fake `az` executable for azure-identity's AzureCliCredential, so tests run the real chain.

`az account get-access-token` prints the token in $FAKE_AZ_TOKEN, or fails the way the real CLI
does when nobody is signed in ($FAKE_AZ_LOGGED_OUT set).
"""

from __future__ import annotations

import sys
from pathlib import Path

_SCRIPT = """#!{python}
import json, os, sys, time

if os.environ.get("FAKE_AZ_LOGGED_OUT"):
    sys.stderr.write("ERROR: Please run 'az login' to setup account.\\n")
    sys.exit(1)
if sys.argv[1:3] != ["account", "get-access-token"]:
    sys.stderr.write("fake az only answers 'account get-access-token'\\n")
    sys.exit(2)
expires = int(time.time()) + 3600
print(json.dumps({{
    "accessToken": os.environ["FAKE_AZ_TOKEN"],
    "expiresOn": time.strftime("%Y-%m-%d %H:%M:%S.000000", time.localtime(expires)),
    "expires_on": expires,
    "subscription": os.environ.get("AZURE_SUBSCRIPTION_ID", ""),
    "tenant": "00000000-0000-0000-0000-0000000000aa",
    "tokenType": "Bearer",
}}))
"""


def install_fake_az(bin_dir: Path) -> Path:
    """Write an executable `az` into `bin_dir` (put it first on PATH) and return its path."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    az = bin_dir / "az"
    az.write_text(_SCRIPT.format(python=sys.executable))
    az.chmod(0o755)
    return az
