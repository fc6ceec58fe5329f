"""The bytes Azure receives from a file: text with LF line endings, whatever the checkout wrote.

A Windows checkout (`core.autocrlf`) or editor writes CRLF. Hashing raw bytes would then give a
new image tag and a new data version, so a rebuild and a retrain, for the same content. Build
contexts and training data are therefore sent with CRLF turned into LF, and their content
hashes are taken over exactly the bytes sent (`.gitattributes` keeps the repository's own files
LF in every checkout as well).
"""

from __future__ import annotations

from pathlib import Path

# git's rule for "binary" (git/git xdiff-interface.c, buffer_is_binary): a NUL byte within the
# first FIRST_FEW_BYTES (8000) bytes. Binary files are sent unchanged.
_BINARY_PROBE = 8000


def as_sent(data: bytes) -> bytes:
    """`data` with CRLF pairs turned into LF, unless git would call it binary."""
    if b"\0" in data[:_BINARY_PROBE]:
        return data
    return data.replace(b"\r\n", b"\n")


def read_as_sent(path: Path) -> bytes:
    return as_sent(path.read_bytes())
