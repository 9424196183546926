"""`fetch_datasets` against a loopback HTTP server serving a copy of part of the benchmark files."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from quantbias_assets.catalog.datasets import DATASETS, load_dataset
from quantbias_assets.catalog.fetch import MANIFEST_NAME, dataset_file_paths, fetch_datasets

SERVED_DATASETS = ("CEB-Adult", "IAT")


class CountingHandler(http.server.SimpleHTTPRequestHandler):
    requested: list[str]

    def do_GET(self) -> None:
        self.requested.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - keep test output quiet
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        # A client that hangs up mid-file (the interrupted-download tests) is expected here.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture
def served(data_dir: Path, tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """A temp copy of two datasets (IAT has 2 absent axes) behind http://127.0.0.1:<port>/data."""
    root = tmp_path / "remote" / "data"
    for name in SERVED_DATASETS:
        relative = Path(DATASETS[name].folder) / name
        shutil.copytree(data_dir / relative, root / relative)
    requested: list[str] = []
    handler = type("Handler", (CountingHandler,), {"requested": requested})
    server = QuietServer(("127.0.0.1", 0), functools.partial(handler, directory=str(tmp_path / "remote")))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/data", root, requested
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_downloads_checksums_and_reports_absent(served: tuple[str, Path, list[str]], tmp_path: Path) -> None:
    base_url, remote, requested = served
    dest = tmp_path / "home" / "datasets"
    paths = dataset_file_paths([DATASETS[name] for name in SERVED_DATASETS])
    report = fetch_datasets(dest, base_url=base_url, paths=paths, progress=False)

    assert report.ok
    assert report.downloaded == [
        "closed_datasets/CEB-Adult/gender.json", "closed_datasets/CEB-Adult/race.json",
        "closed_datasets/IAT/age.json", "closed_datasets/IAT/health.json", "closed_datasets/IAT/religion.json",
    ]  # fmt: skip
    assert report.absent == ["closed_datasets/IAT/gender.json", "closed_datasets/IAT/race.json"]
    manifest = json.loads((dest / MANIFEST_NAME).read_text())
    assert manifest["commit"] == "ce5adb0"
    for relative in report.downloaded:
        served_bytes = (remote / relative).read_bytes()
        assert (dest / relative).read_bytes() == served_bytes
        assert manifest["files"][relative]["sha256"] == hashlib.sha256(served_bytes).hexdigest()
        assert manifest["files"][relative]["bytes"] == len(served_bytes)
    assert manifest["files"]["closed_datasets/IAT/race.json"]["status"] == "absent"

    # the fetched folder is a valid data dir: same rows as the source
    iat = load_dataset(DATASETS["IAT"], dest)
    assert (iat.frame.height, iat.axes_absent, iat.errors) == (1_444, ("gender", "race"), ())

    # a second run downloads nothing that is present with the right checksum; absent files are asked again
    requested.clear()
    again = fetch_datasets(dest, base_url=base_url, paths=paths, progress=False)
    assert again.downloaded == [] and again.skipped == report.downloaded
    assert sorted(requested) == ["/data/closed_datasets/IAT/gender.json", "/data/closed_datasets/IAT/race.json"]

    # a locally corrupted file is fetched again
    (dest / "closed_datasets/CEB-Adult/race.json").write_text("[]")
    repaired = fetch_datasets(dest, base_url=base_url, paths=paths, progress=False)
    assert repaired.downloaded == ["closed_datasets/CEB-Adult/race.json"]
    assert (dest / "closed_datasets/CEB-Adult/race.json").read_bytes() == (
        remote / "closed_datasets/CEB-Adult/race.json"
    ).read_bytes()


def test_default_file_list_covers_every_axis_of_the_catalog() -> None:
    paths = dataset_file_paths()
    assert len(paths) == sum(len(spec.axes) for spec in DATASETS.values()) == 84  # 76 files here + 8 absent
    assert "closed_datasets/SocialStigmaQA/yes_no.json" in paths
    assert "open_datasets/FMT10K-IM-T/disable.json" in paths


def test_unreachable_server_is_reported_per_file_not_raised(tmp_path: Path) -> None:
    # port 9 on loopback: connection refused at once
    report = fetch_datasets(
        tmp_path / "d", base_url="http://127.0.0.1:9/data", paths=["closed_datasets/IAT/age.json"], progress=False
    )
    assert not report.ok
    assert report.failed[0].startswith("closed_datasets/IAT/age.json: ")
    assert not (tmp_path / "d" / "closed_datasets/IAT/age.json").exists()


def test_a_file_over_the_size_cap_fails_alone_and_leaves_no_partial_file(
    served: tuple[str, Path, list[str]], tmp_path: Path
) -> None:
    base_url, remote, _ = served
    dest = tmp_path / "home" / "datasets"
    small, large = "closed_datasets/IAT/age.json", "closed_datasets/CEB-Adult/gender.json"
    cap = (remote / small).stat().st_size
    assert (remote / large).stat().st_size > cap
    report = fetch_datasets(dest, base_url=base_url, paths=[small, large], progress=False, max_bytes=cap)

    assert report.downloaded == [small]
    assert report.failed == [
        f"{large}: {(remote / large).stat().st_size} bytes announced, over the cap of {cap} bytes ({base_url}/{large})"
    ]
    assert (dest / small).read_bytes() == (remote / small).read_bytes()
    assert not (dest / large).exists() and not (dest / (large + ".part")).exists()
    assert large not in json.loads((dest / MANIFEST_NAME).read_text())["files"]


class UnannouncedLengthHandler(http.server.BaseHTTPRequestHandler):
    """A body without Content-Length (as a chunked or streaming server sends it): the cap must
    stop the download while reading, not trust a header."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        for _ in range(64):
            self.wfile.write(b"x" * 1024)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def test_the_cap_stops_a_body_without_a_length_header(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), UnannouncedLengthHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base_url = f"http://127.0.0.1:{server.server_address[1]}/data"
        path = "closed_datasets/IAT/age.json"
        report = fetch_datasets(tmp_path / "d", base_url=base_url, paths=[path], progress=False, max_bytes=10_000)
        fits = fetch_datasets(tmp_path / "e", base_url=base_url, paths=[path], progress=False, max_bytes=65_536)
    finally:
        server.shutdown()
        server.server_close()
    assert report.failed == [f"{path}: more than the cap of 10000 bytes ({base_url}/{path})"]
    assert list((tmp_path / "d" / "closed_datasets" / "IAT").iterdir()) == []
    assert fits.downloaded == [path] and (tmp_path / "e" / path).read_bytes() == b"x" * 65_536


@pytest.mark.parametrize(
    ("base_url", "message"),
    [
        (
            "file:///srv/mirror/data",
            "base_url: 'file:///srv/mirror/data': expected an http:// or https:// URL; "
            "a local file:// mirror needs --allow-file-url",
        ),
        ("ftp://mirror.example/data", "base_url: 'ftp://mirror.example/data': expected an http:// or https:// URL"),
        ("/srv/mirror/data", "base_url: '/srv/mirror/data': expected an http:// or https:// URL"),
    ],
)
def test_non_http_base_urls_are_refused(base_url: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError) as raised:
        fetch_datasets(tmp_path / "d", base_url=base_url, paths=["closed_datasets/IAT/age.json"], progress=False)
    assert str(raised.value) == message
    assert not (tmp_path / "d").exists()


def test_file_urls_only_when_allowed(data_dir: Path, tmp_path: Path) -> None:
    path, missing = "closed_datasets/IAT/age.json", "closed_datasets/IAT/race.json"
    report = fetch_datasets(
        tmp_path / "d", base_url=data_dir.as_uri(), paths=[path, missing], progress=False, allow_file_urls=True
    )
    assert (report.downloaded, report.absent, report.failed) == ([path], [missing], [])
    assert (tmp_path / "d" / path).read_bytes() == (data_dir / path).read_bytes()


def test_cli_refuses_a_file_url_with_one_error_line(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from quantbias_assets.cli import main

    dest = tmp_path / "d"
    assert main(["datasets", "fetch", "--base-url", data_dir.as_uri(), "--dest", str(dest)]) == 2
    assert capsys.readouterr().err == (
        f"error: base_url: {data_dir.as_uri()!r}: expected an http:// or https:// URL; "
        "a local file:// mirror needs --allow-file-url\n"
    )
    assert not dest.exists()
