"""The one canonical JSON form and file digest every content hash is built on."""

from __future__ import annotations

import hashlib
from pathlib import Path

from quantbias_assets.hashing import canonical_json, file_sha256, json_sha256, update_with_file


def test_canonical_json_sorts_keys_drops_spaces_and_keeps_unicode() -> None:
    assert canonical_json({"b": [1, 2.5], "a": "é"}) == '{"a":"é","b":[1,2.5]}'
    assert canonical_json({"a": 1, "b": 2}) == canonical_json({"b": 2, "a": 1})


def test_json_sha256_is_the_digest_of_the_canonical_text() -> None:
    assert json_sha256(["q", "a"]) == hashlib.sha256(b'["q","a"]').hexdigest()
    assert json_sha256({}) == "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"


def test_file_sha256_streams_files_larger_than_one_block(tmp_path: Path) -> None:
    content = bytes(range(256)) * 9_000  # 2.2 MiB: three blocks
    path = tmp_path / "weights.bin"
    path.write_bytes(content)
    assert file_sha256(path) == hashlib.sha256(content).hexdigest()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert file_sha256(empty) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    running = update_with_file(update_with_file(hashlib.sha256(b"x"), path), empty)
    assert running.hexdigest() == hashlib.sha256(b"x" + content).hexdigest()
