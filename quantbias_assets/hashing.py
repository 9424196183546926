"""Content addressing: one canonical JSON text and one streamed file digest for every hash.

Question, response, conversation and config hashes are sha256 of `canonical_json`; changing
either function changes every stored hash, so both live here once. Standard library only:
workers and the catalog import it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

_BLOCK = 1 << 20


def canonical_json(value: object) -> str:
    """Sorted keys, no spaces, non-ASCII kept: equal values give equal text."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def json_sha256(value: object) -> str:
    """sha256 (hex) of the value's canonical JSON."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def update_with_file(digest: Any, path: Path) -> Any:
    """Feed a file's bytes into a hashlib digest in 1 MiB blocks (a large file is never read whole)."""
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest


def file_sha256(path: Path) -> str:
    return update_with_file(hashlib.sha256(), path).hexdigest()
