"""Download the benchmark's JSON files from the reference repository at a pinned commit.

Files land in `<dest>/<closed_datasets|open_datasets>/<Dataset>/<axis>.json` (the layout the
catalog reads) and `<dest>/manifest.json` records the sha256 and size of every file, or that the
remote has no such file. A file already present with the checksum recorded in the manifest is
not downloaded again. A 404 is "absent" (several files of the paper are not in the repository),
never fatal; any other failure is reported per file and leaves the files already fetched intact.

Bodies are streamed to disk (never held in memory) and a file larger than `max_bytes`
(default 512 MiB; the largest benchmark file is a few MiB) is abandoned as a failure. Only
http(s) base URLs are fetched unless `allow_file_urls` admits a local `file://` mirror.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from quantbias_assets.catalog.datasets import DATASETS, DatasetSpec
from quantbias_assets.hashing import file_sha256

REFERENCE_REPOSITORY = "stan-hua/PostTrainingBiasBenchmark"
REFERENCE_COMMIT = "ce5adb0"
DEFAULT_BASE_URL = f"https://raw.githubusercontent.com/{REFERENCE_REPOSITORY}/{REFERENCE_COMMIT}/data"
MANIFEST_NAME = "manifest.json"
DEFAULT_MAX_FILE_BYTES = 512 * 1024 * 1024
WEB_SCHEMES = ("http", "https")
_BLOCK = 1 << 20


class FileTooLarge(Exception):
    """A body went past the size cap; the partial file is already removed."""


@dataclass
class FetchReport:
    downloaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # "<path>: <reason>"

    @property
    def ok(self) -> bool:
        return not self.failed


def dataset_file_paths(specs: Iterable[DatasetSpec] | None = None) -> list[str]:
    """Every axis file of the catalog, relative to the data folder."""
    chosen = DATASETS.values() if specs is None else specs
    return [spec.relative_path(axis) for spec in chosen for axis in spec.axes]


def read_manifest(dest: Path) -> dict[str, dict[str, object]]:
    path = dest / MANIFEST_NAME
    if not path.is_file():
        return {}
    return dict(json.loads(path.read_text())["files"])


def fetch_datasets(
    dest: Path,
    *,
    base_url: str = DEFAULT_BASE_URL,
    paths: Iterable[str] | None = None,
    progress: bool = True,
    timeout_s: float = 60.0,
    max_bytes: int = DEFAULT_MAX_FILE_BYTES,
    allow_file_urls: bool = False,
) -> FetchReport:
    """Fetch the catalog's files (or `paths`) from `base_url` into `dest`."""
    schemes = check_base_url(base_url, allow_file_urls)
    if max_bytes < 1:
        raise ValueError(f"max_bytes: {max_bytes}: expected at least 1")
    dest.mkdir(parents=True, exist_ok=True)
    wanted = list(paths) if paths is not None else dataset_file_paths()
    manifest = read_manifest(dest)
    report = FetchReport()
    bar = tqdm(wanted, desc="datasets", unit="file", disable=not progress)
    for relative in bar:
        bar.set_postfix_str(relative, refresh=False)
        target = dest / relative
        recorded = manifest.get(relative, {})
        if target.is_file() and recorded.get("sha256") == file_sha256(target):
            report.skipped.append(relative)
            continue
        url = f"{base_url.rstrip('/')}/{relative}"
        try:
            sha256, size = _download_to(url, target, timeout_s=timeout_s, max_bytes=max_bytes, schemes=schemes)
        except urllib.error.HTTPError as error:
            if error.code == 404:
                report.absent.append(relative)
                manifest[relative] = {"status": "absent", "url": url}
            else:
                report.failed.append(f"{relative}: HTTP {error.code} from {url}")
            continue
        except urllib.error.URLError as error:
            if isinstance(error.reason, FileNotFoundError):  # a file:// mirror's 404
                report.absent.append(relative)
                manifest[relative] = {"status": "absent", "url": url}
            else:
                report.failed.append(f"{relative}: {error} ({url})")
            continue
        except FileTooLarge as error:
            report.failed.append(f"{relative}: {error} ({url})")
            continue
        except (TimeoutError, OSError) as error:
            report.failed.append(f"{relative}: {error} ({url})")
            continue
        manifest[relative] = {"status": "present", "sha256": sha256, "bytes": size, "url": url}
        report.downloaded.append(relative)
        # the manifest is rewritten after every file so an interrupted fetch keeps its progress
        _write_manifest(dest, base_url, manifest)
    _write_manifest(dest, base_url, manifest)
    return report


def check_base_url(base_url: str, allow_file_urls: bool = False) -> tuple[str, ...]:
    """The schemes a download may use (redirects included); ValueError for any other base URL."""
    schemes = WEB_SCHEMES + (("file",) if allow_file_urls else ())
    scheme = urllib.parse.urlsplit(base_url).scheme.lower()
    if scheme not in schemes:
        hint = "; a local file:// mirror needs --allow-file-url" if scheme == "file" else ""
        raise ValueError(f"base_url: {base_url!r}: expected an http:// or https:// URL{hint}")
    return schemes


def _download_to(
    url: str, target: Path, *, timeout_s: float, max_bytes: int, schemes: tuple[str, ...]
) -> tuple[str, int]:
    """Stream `url` into `target` (through `<target>.part`, renamed when complete); returns
    (sha256, bytes). Stops at `max_bytes` whatever the server announced."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    size = 0
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - scheme checked
        final = urllib.parse.urlsplit(response.geturl()).scheme.lower()
        if final not in schemes:  # a redirect may point anywhere urllib follows (ftp://)
            raise urllib.error.URLError(f"redirected to a {final}:// URL, which is not fetched")
        announced = response.headers.get("Content-Length") if response.headers else None
        if announced and announced.isdigit() and int(announced) > max_bytes:
            raise FileTooLarge(f"{announced} bytes announced, over the cap of {max_bytes} bytes")
        try:
            with partial.open("wb") as out:
                while block := response.read(_BLOCK):
                    size += len(block)
                    if size > max_bytes:
                        raise FileTooLarge(f"more than the cap of {max_bytes} bytes")
                    digest.update(block)
                    out.write(block)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    os.replace(partial, target)
    return digest.hexdigest(), size


def _write_atomically(target: Path, payload: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    partial.write_bytes(payload)
    os.replace(partial, target)


def _write_manifest(dest: Path, base_url: str, files: dict[str, dict[str, object]]) -> None:
    body = {"repository": REFERENCE_REPOSITORY, "commit": REFERENCE_COMMIT, "base_url": base_url, "files": files}
    _write_atomically(dest / MANIFEST_NAME, json.dumps(body, indent=1, sort_keys=True).encode())
