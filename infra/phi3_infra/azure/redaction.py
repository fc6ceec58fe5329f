"""Keep credentials that travel in URLs out of error messages.

Blob and registry URLs handed out by Azure carry a SAS token in their query string; anything
raised inside `pulumi up` ends up in its output and in CI logs, so messages only ever show a
URL's scheme, host and path.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def without_query(url: str) -> str:
    """`url` without its query string and fragment: where it points, not how it is signed."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
