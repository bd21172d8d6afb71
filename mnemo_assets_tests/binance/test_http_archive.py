"""HttpArchive against the loopback ArchiveServer: listings, downloads, caching and faults."""

from __future__ import annotations

import hashlib
import json
import socket
import time
import zipfile
from datetime import date, timedelta
from pathlib import Path

import pytest
from polars.testing import assert_frame_equal

from mnemo_assets.binance.archive import (
    ArchiveError,
    ArchiveMissingError,
    ChecksumMismatchError,
    LocalMirror,
    archive_key,
    checksum_line,
)
from mnemo_assets.binance.http_archive import HttpArchive
from mnemo_assets.binance.klines import read_klines_file
from mnemo_assets.binance.synthetic import SyntheticArchive
from mnemo_assets.config import HttpSettings
from mnemo_assets_tests.archive_server import ArchiveServer, make_trades_zip, write_archive_day

D0 = date(2024, 8, 8)
SPOT_PAIRS = ["ADAUSDT", "BNBUSDT", "BTCUSDT", "ETHUSDT", "XRPUSDT"]
UM_PAIRS = ["1000SHIBUSDT", "BTCUSDT", "ETHUSDT"]
CM_PAIRS = ["BTCUSD_PERP"]
DAYS = [D0 + timedelta(days=i) for i in range(5)]


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """The 'remote' archive the server serves: a few pairs and days per market."""
    root = tmp_path / "remote"
    for pair in SPOT_PAIRS:
        write_archive_day(root, "spot", pair, D0)
    for day in DAYS:
        write_archive_day(root, "spot", "BTCUSDT", day)
    for pair in UM_PAIRS:
        write_archive_day(root, "um", pair, D0)
    write_archive_day(root, "cm", "BTCUSD_PERP", D0)
    # things list_days must ignore
    folder = root / "data/spot/daily/trades/BTCUSDT"
    (folder / "README.txt").write_text("not a trades file\n")
    (folder / "BTCUSDT-trades-2024-08.zip").write_bytes(b"monthly-looking name, ignored")
    return root


@pytest.fixture
def server(remote: Path):
    with ArchiveServer(remote, page_size=2) as srv:
        yield srv


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    return tmp_path / "mirror"


def make_archive(server: ArchiveServer, mirror: Path, **kw) -> HttpArchive:
    kw.setdefault("backoff", 0.01)
    kw.setdefault("timeout", 5)
    return HttpArchive(mirror, base_url=server.url, listing_url=server.listing_url, **kw)


def leftovers(root: Path) -> list[Path]:
    """Temporary download files anywhere below ``root``."""
    return [p for p in root.rglob("*") if p.name.endswith(".part") or (p.name.startswith(".") and p.is_file())]


KEY = archive_key("spot", "BTCUSDT", D0)


# ---------------------------------------------------------------- listings


@pytest.mark.parametrize(("market", "pairs"), [("spot", SPOT_PAIRS), ("um", UM_PAIRS), ("cm", CM_PAIRS)])
def test_list_pairs_paginates(server, mirror, market, pairs):
    archive = make_archive(server, mirror)
    assert archive.list_pairs(market) == sorted(pairs)
    # page_size=2: ceil(len/2) pages (an exact multiple may need one more, empty, page)
    assert len(server.listing_requests) >= max(1, (len(pairs) + 1) // 2)
    if len(pairs) > 2:
        assert any("marker=" in r for r in server.listing_requests)


def test_list_pairs_without_next_marker_uses_last_prefix(remote, mirror):
    with ArchiveServer(remote, page_size=2, next_marker=False) as srv:
        archive = make_archive(srv, mirror)
        assert archive.list_pairs("spot") == SPOT_PAIRS
        assert len(srv.listing_requests) == 3


def test_list_days_paginates_and_ignores_other_files(server, mirror):
    archive = make_archive(server, mirror)
    assert archive.list_days("spot", "BTCUSDT") == DAYS
    # 5 zips + 5 CHECKSUMs + 2 other files at 2 per page
    assert len(server.listing_requests) == 6
    assert archive.list_days("spot", "NOSUCHPAIR") == []
    assert archive.list_days("um", "ETHUSDT") == [D0]


def test_listing_cached_in_memory_and_on_disk_within_ttl(server, mirror):
    archive = make_archive(server, mirror)
    assert archive.list_pairs("spot") == SPOT_PAIRS
    assert archive.list_days("spot", "BTCUSDT") == DAYS
    server.clear_log()

    assert archive.list_pairs("spot") == SPOT_PAIRS
    assert archive.list_days("spot", "BTCUSDT") == DAYS
    # a new instance (a re-run) reads mirror/.listings
    again = make_archive(server, mirror)
    assert again.list_pairs("spot") == SPOT_PAIRS
    assert again.list_days("spot", "BTCUSDT") == DAYS
    assert server.requests == []
    assert sorted(p.name for p in (mirror / ".listings").iterdir()) == [
        "data__spot__daily__trades.json",
        "data__spot__daily__trades__BTCUSDT.json",
    ]


def test_listing_cache_expires(server, mirror):
    archive = make_archive(server, mirror, listing_ttl=3600)
    archive.list_pairs("spot")
    cache = mirror / ".listings" / "data__spot__daily__trades.json"
    data = json.loads(cache.read_text())
    data["fetched_at"] -= 7200
    cache.write_text(json.dumps(data))
    server.clear_log()

    assert make_archive(server, mirror).list_pairs("spot") == SPOT_PAIRS
    assert server.listing_requests  # stale on disk -> listed again


def test_listing_ttl_zero_disables_cache(server, mirror):
    archive = make_archive(server, mirror, listing_ttl=0)
    archive.list_pairs("um")
    n = len(server.listing_requests)
    archive.list_pairs("um")
    assert len(server.listing_requests) == 2 * n
    assert not (mirror / ".listings").exists()


def test_listing_retries_transient_errors(server, mirror):
    server.faults["listing"] = [500, "truncate", "drop"]
    assert make_archive(server, mirror).list_pairs("spot") == SPOT_PAIRS


def test_listing_persistent_error_is_clear(server, mirror):
    server.faults["listing"] = 503
    with pytest.raises(ArchiveError, match=r"prefix=data%2Fspot.*503"):
        make_archive(server, mirror, retries=2).list_pairs("spot")
    assert len(server.listing_requests) == 3


# ---------------------------------------------------------------- fetch


def test_fetch_downloads_into_mirror_layout_and_verifies(server, remote, mirror):
    archive = make_archive(server, mirror)
    got = archive.fetch("spot", "BTCUSDT", D0)
    assert got.path == mirror / KEY
    assert (got.market, got.pair, got.day) == ("spot", "BTCUSDT", D0)
    assert got.path.read_bytes() == (remote / KEY).read_bytes()
    assert got.sha256 == hashlib.sha256(got.path.read_bytes()).hexdigest()
    assert (mirror / (KEY + ".CHECKSUM")).read_text() == (remote / (KEY + ".CHECKSUM")).read_text()
    assert server.requests == [f"/{KEY}.CHECKSUM", f"/{KEY}"]
    with zipfile.ZipFile(got.path) as zf:
        assert zf.namelist() == ["BTCUSDT-trades-2024-08-08.csv"]
        assert zf.read(zf.namelist()[0]).decode().startswith("1,100.00000000,1.00000000,100.00000000,")
    assert leftovers(mirror) == []


def test_second_fetch_makes_no_request(server, mirror):
    make_archive(server, mirror).fetch("spot", "BTCUSDT", D0)
    server.clear_log()
    again = make_archive(server, mirror).fetch("spot", "BTCUSDT", D0)
    assert again.path == mirror / KEY
    assert server.requests == []


def test_cached_copy_that_does_not_verify_is_downloaded_again(server, remote, mirror):
    archive = make_archive(server, mirror)
    path = archive.fetch("spot", "BTCUSDT", D0).path
    path.write_bytes(b"damaged on disk")
    server.clear_log()
    assert archive.fetch("spot", "BTCUSDT", D0).path.read_bytes() == (remote / KEY).read_bytes()
    assert server.requests == [f"/{KEY}.CHECKSUM", f"/{KEY}"]


def test_checksum_mismatch_retries_then_raises_and_leaves_nothing(server, remote, mirror):
    (remote / (KEY + ".CHECKSUM")).write_text(checksum_line(b"other bytes", Path(KEY).name))
    archive = make_archive(server, mirror, retries=2)
    with pytest.raises(ChecksumMismatchError) as info:
        archive.fetch("spot", "BTCUSDT", D0)
    msg = str(info.value)
    assert "BTCUSDT-trades-2024-08-08.zip" in msg
    assert hashlib.sha256(b"other bytes").hexdigest() in msg  # expected
    assert hashlib.sha256((remote / KEY).read_bytes()).hexdigest() in msg  # actual
    assert len(server.requests_for(KEY)) == 3  # retried (re-downloaded) before giving up
    assert not (mirror / KEY).exists()
    assert not (mirror / (KEY + ".CHECKSUM")).exists()
    assert leftovers(mirror) == []


def test_corrupt_body_once_is_retried(server, remote, mirror):
    server.faults[KEY] = ["corrupt"]
    got = make_archive(server, mirror).fetch("spot", "BTCUSDT", D0)
    assert got.path.read_bytes() == (remote / KEY).read_bytes()
    assert len(server.requests_for(KEY)) == 2


def test_persistently_corrupt_body_raises_checksum_mismatch(server, mirror):
    server.faults[KEY] = "corrupt"
    with pytest.raises(ChecksumMismatchError, match=r"BTCUSDT-trades-2024-08-08\.zip"):
        make_archive(server, mirror, retries=1).fetch("spot", "BTCUSDT", D0)
    assert not (mirror / KEY).exists()
    assert leftovers(mirror) == []


def test_missing_day_raises_archive_missing_without_retries(server, mirror):
    archive = make_archive(server, mirror)
    missing = date(2020, 1, 1)
    key = archive_key("spot", "BTCUSDT", missing)
    with pytest.raises(ArchiveMissingError) as info:
        archive.fetch("spot", "BTCUSDT", missing)
    assert server.url + key in str(info.value)
    assert "404" in str(info.value)
    assert len(server.requests) == 1
    assert not (mirror / key).exists()


def test_zip_404_raises_archive_missing_without_retries(server, mirror):
    server.faults[KEY] = 404
    with pytest.raises(ArchiveMissingError, match=r"BTCUSDT-trades-2024-08-08\.zip: HTTP 404"):
        make_archive(server, mirror).fetch("spot", "BTCUSDT", D0)
    assert len(server.requests_for(KEY)) == 1
    assert not (mirror / KEY).exists()


def test_other_4xx_raises_with_status_without_retries(server, mirror):
    server.faults[KEY + ".CHECKSUM"] = 403
    with pytest.raises(ArchiveError, match=r"BTCUSDT-trades-2024-08-08\.zip\.CHECKSUM: HTTP 403") as info:
        make_archive(server, mirror).fetch("spot", "BTCUSDT", D0)
    assert not isinstance(info.value, ArchiveMissingError)
    assert len(server.requests) == 1


def test_truncated_body_is_retried(server, remote, mirror):
    server.faults[KEY] = ["truncate"]
    got = make_archive(server, mirror).fetch("spot", "BTCUSDT", D0)
    assert got.path.read_bytes() == (remote / KEY).read_bytes()
    assert len(server.requests_for(KEY)) == 2
    assert leftovers(mirror) == []


def test_persistent_truncation_raises_and_leaves_no_partial_file(server, mirror):
    server.faults[KEY] = "truncate"
    with pytest.raises(ArchiveError, match=r"BTCUSDT-trades-2024-08-08\.zip.*truncated") as info:
        make_archive(server, mirror, retries=2).fetch("spot", "BTCUSDT", D0)
    assert not isinstance(info.value, ChecksumMismatchError)
    assert len(server.requests_for(KEY)) == 3
    assert not (mirror / KEY).exists()
    assert leftovers(mirror) == []


def test_transient_500_twice_then_ok(server, remote, mirror):
    server.faults[KEY] = [500, 503]
    server.faults[KEY + ".CHECKSUM"] = [429]
    got = make_archive(server, mirror).fetch("spot", "BTCUSDT", D0)
    assert got.path.read_bytes() == (remote / KEY).read_bytes()
    assert len(server.requests_for(KEY)) == 3


def test_persistent_500_gives_up_after_retries(server, mirror):
    server.faults[KEY] = 500
    with pytest.raises(ArchiveError, match=r"BTCUSDT-trades-2024-08-08\.zip.*5 attempt.*HTTP 500"):
        make_archive(server, mirror).fetch("spot", "BTCUSDT", D0)
    assert len(server.requests_for(KEY)) == 5  # retries=4 -> 5 attempts
    assert not (mirror / KEY).exists()


def test_dropped_connection_and_timeout_are_retried(server, remote, mirror):
    server.hang_seconds = 1.0
    server.faults[KEY] = ["drop", "hang"]
    got = make_archive(server, mirror, timeout=0.3).fetch("spot", "BTCUSDT", D0)
    assert got.path.read_bytes() == (remote / KEY).read_bytes()
    assert len(server.requests_for(KEY)) == 3


@pytest.mark.parametrize("text", ["", "not a checksum\n", "abc123  BTCUSDT-trades-2024-08-08.zip\n"])
def test_malformed_checksum_file_is_a_clear_error(server, remote, mirror, text):
    (remote / (KEY + ".CHECKSUM")).write_text(text)
    with pytest.raises(ArchiveError, match=r"BTCUSDT-trades-2024-08-08\.zip\.CHECKSUM: malformed CHECKSUM"):
        make_archive(server, mirror).fetch("spot", "BTCUSDT", D0)
    assert not (mirror / KEY).exists()
    assert leftovers(mirror) == []


def test_corrupted_checksum_bytes_are_a_clear_error(server, mirror):
    server.faults[KEY + ".CHECKSUM"] = "corrupt"
    with pytest.raises(ArchiveError, match="malformed CHECKSUM"):
        make_archive(server, mirror).fetch("spot", "BTCUSDT", D0)
    assert not (mirror / KEY).exists()


def test_futures_fetch_uses_futures_layout(server, remote, mirror):
    got = make_archive(server, mirror).fetch("cm", "BTCUSD_PERP", D0)
    key = "data/futures/cm/daily/trades/BTCUSD_PERP/BTCUSD_PERP-trades-2024-08-08.zip"
    assert got.path == mirror / key
    assert got.path.read_bytes() == (remote / key).read_bytes()


def test_download_range_fetches_listed_days_only(server, mirror):
    seen = []
    archive = make_archive(server, mirror)
    files = archive.download_range(
        "spot",
        ["BTCUSDT", "ETHUSDT"],
        D0 + timedelta(days=1),
        D0 + timedelta(days=10),
        progress=lambda done, total, f: seen.append((done, total, f.day)),
    )
    assert [f.day for f in files] == DAYS[1:]
    assert seen[-1][:2] == (4, 4)
    assert all(f.path.exists() for f in files)


# ---------------------------------------------------------------- offline reuse


def test_local_mirror_reads_what_http_archive_cached(remote, mirror):
    with ArchiveServer(remote, page_size=2) as srv:
        archive = make_archive(srv, mirror)
        downloaded = [archive.fetch("spot", "BTCUSDT", d) for d in DAYS[:2]]
        archive.fetch("um", "ETHUSDT", D0)
    # server gone: everything below works offline
    local = LocalMirror(mirror)
    assert local.list_pairs("spot") == ["BTCUSDT"]
    assert local.list_days("spot", "BTCUSDT") == DAYS[:2]
    for f in downloaded:
        got = local.fetch("spot", "BTCUSDT", f.day)
        assert (got.path, got.sha256) == (f.path, f.sha256)
    assert local.fetch("um", "ETHUSDT", D0).path.exists()
    # and HttpArchive itself re-serves cached files without the server
    offline = HttpArchive(mirror, base_url="http://127.0.0.1:9/", listing_url="http://127.0.0.1:9/", retries=0)
    assert offline.fetch("spot", "BTCUSDT", DAYS[0]).sha256 == downloaded[0].sha256


def test_server_only_listens_on_loopback(remote):
    with ArchiveServer(remote) as srv:
        assert srv.url.startswith("http://127.0.0.1:")
        assert srv._httpd.server_address[0] == "127.0.0.1"


# ---------------------------------------------------------------- deadlines


def test_dripping_body_fails_within_the_request_timeout(server, mirror):
    """One byte every 0.1 s never trips a socket timeout; the per-request deadline does."""
    server.drip_seconds = 0.1
    server.faults[KEY] = "drip"
    t0 = time.monotonic()
    with pytest.raises(ArchiveError, match=r"BTCUSDT-trades-2024-08-08\.zip.*no complete answer within 0\.5 s") as info:
        make_archive(server, mirror, timeout=0.5, retries=1).fetch("spot", "BTCUSDT", D0)
    assert time.monotonic() - t0 < 3.0
    assert "\n" not in str(info.value)
    assert len(server.requests_for(KEY)) == 2
    assert not (mirror / KEY).exists() and leftovers(mirror) == []


def test_dripping_headers_fail_within_the_request_timeout(server, mirror):
    server.drip_seconds = 0.1
    server.faults[KEY + ".CHECKSUM"] = "drip_headers"
    t0 = time.monotonic()
    with pytest.raises(ArchiveError, match=r"\.CHECKSUM.*no complete answer within 0\.4 s"):
        make_archive(server, mirror, timeout=0.4, retries=0).fetch("spot", "BTCUSDT", D0)
    assert time.monotonic() - t0 < 2.0


def test_overall_deadline_bounds_all_attempts(server, mirror):
    server.drip_seconds = 0.1
    server.faults[KEY] = "drip"
    t0 = time.monotonic()
    with pytest.raises(ArchiveError, match=r"failed after \d attempt"):
        make_archive(server, mirror, timeout=0.5, retries=20, deadline=1.2).fetch("spot", "BTCUSDT", D0)
    assert time.monotonic() - t0 < 2.5
    assert 2 <= len(server.requests_for(KEY)) <= 4


# ---------------------------------------------------------------- where requests go


def test_redirect_to_another_host_is_refused(server, mirror):
    server.faults[KEY + ".CHECKSUM"] = ("redirect", "http://archive.invalid/evil.CHECKSUM")
    with pytest.raises(ArchiveError, match=r"redirect to http://archive\.invalid/evil\.CHECKSUM refused"):
        make_archive(server, mirror).fetch("spot", "BTCUSDT", D0)
    assert server.requests == [f"/{KEY}.CHECKSUM"]
    assert not (mirror / KEY).exists()


def test_redirect_on_the_same_host_is_followed(server, remote, mirror):
    server.faults[KEY] = [("redirect", f"/{KEY}?again=1")]
    got = make_archive(server, mirror).fetch("spot", "BTCUSDT", D0)
    assert got.path.read_bytes() == (remote / KEY).read_bytes()
    assert server.requests == [f"/{KEY}.CHECKSUM", f"/{KEY}", f"/{KEY}?again=1"]


@pytest.mark.parametrize("pair", ["../../etc", "BTC/../../x", "BTC%2F..%2F..", "BTC USDT", "..", "btcusdt", "", "A" * 41])
def test_hostile_pair_names_never_touch_disk_or_network(server, mirror, tmp_path, pair):
    before = sorted(p for p in tmp_path.rglob("*"))
    archive = make_archive(server, mirror)
    for call in (
        lambda: archive.fetch("spot", pair, D0),
        lambda: archive.list_days("spot", pair),
        lambda: archive.recheck("spot", pair, D0, "klines"),
        lambda: LocalMirror(tmp_path).fetch("spot", pair, D0),
    ):
        with pytest.raises(ValueError, match="bad pair name"):
            call()
    assert server.requests == []
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_listing_ignores_folders_that_are_not_pair_names(remote, mirror):
    base = remote / "data/spot/daily/trades"
    (base / "bad name").mkdir()
    (base / "bad name" / "x.zip").write_bytes(b"x")
    (base / "lower").mkdir()
    (base / "lower" / "x.zip").write_bytes(b"x")
    with ArchiveServer(remote) as srv:
        assert make_archive(srv, mirror).list_pairs("spot") == SPOT_PAIRS


def test_garbage_checksum_bytes_name_the_file(server, remote, mirror):
    garbage = b"\xff\xfe\x00" + bytes(range(128, 256))
    (remote / (KEY + ".CHECKSUM")).write_bytes(garbage)
    with pytest.raises(ArchiveError, match=r"BTCUSDT-trades-2024-08-08\.zip\.CHECKSUM: malformed CHECKSUM file: 131 bytes that are not ASCII"):
        make_archive(server, mirror).fetch("spot", "BTCUSDT", D0)
    assert not (mirror / KEY).exists()
    # the same bytes in a local mirror: a clear error too, not a UnicodeDecodeError
    with pytest.raises(ArchiveError, match=r"BTCUSDT-trades-2024-08-08\.zip\.CHECKSUM: malformed CHECKSUM"):
        LocalMirror(remote).fetch("spot", "BTCUSDT", D0)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_archive_says_so_in_one_line(mirror):
    url = f"http://127.0.0.1:{_closed_port()}/"
    archive = HttpArchive(mirror, base_url=url, listing_url=url + "listing", retries=1, backoff=0.01, timeout=2)
    for call in (lambda: archive.fetch("spot", "BTCUSDT", D0), lambda: archive.list_pairs("spot")):
        with pytest.raises(ArchiveError) as info:
            call()
        msg = str(info.value)
        assert "\n" not in msg
        assert "unreachable after 2 attempt(s)" in msg
        assert "source.kind: synthetic or mirror" in msg
    assert not (mirror / KEY).exists()


def test_listing_ttl_hides_a_new_day_at_most_that_long(server, remote, mirror):
    archive = make_archive(server, mirror, listing_ttl=0.5)
    assert archive.list_days("spot", "BTCUSDT") == DAYS
    new_day = DAYS[-1] + timedelta(days=1)
    write_archive_day(remote, "spot", "BTCUSDT", new_day)
    assert archive.list_days("spot", "BTCUSDT") == DAYS  # still within the TTL
    time.sleep(0.6)
    assert archive.list_days("spot", "BTCUSDT") == [*DAYS, new_day]
    assert make_archive(server, mirror, listing_ttl=0).list_days("spot", "BTCUSDT") == [*DAYS, new_day]


def test_http_settings_feed_the_archive(mirror):
    settings = HttpSettings(timeout_seconds=3, deadline_seconds=9, listing_ttl_seconds=0, retries=2, revalidate_seconds=5)
    archive = HttpArchive.from_settings(mirror, settings)
    assert (archive.timeout, archive.deadline, archive.listing_ttl, archive.retries, archive.revalidate_after) == (3, 9, 0, 2, 5)
    assert HttpArchive(mirror).base_url == HttpSettings().base_url


# ---------------------------------------------------------------- re-uploads


def _republished_zip() -> bytes:
    return make_trades_zip("spot", "BTCUSDT", D0, [f"{i + 1},200.00000000,1.00000000,200.00000000,1723075200000,True,True" for i in range(4)])


def test_download_records_validators(server, remote, mirror):
    got = make_archive(server, mirror).fetch("spot", "BTCUSDT", D0)
    checksum = (remote / (KEY + ".CHECKSUM")).read_bytes()
    assert got.etag == f'"{hashlib.md5(checksum).hexdigest()}"'
    assert got.last_modified and got.url == server.url + KEY
    assert got.size == (remote / KEY).stat().st_size and got.previous_sha256 is None
    record = json.loads((mirror / ".http-meta" / (KEY + ".json")).read_text())
    assert record["sha256"] == got.sha256 and record["etag"] == got.etag


def test_revalidation_is_one_conditional_request(server, mirror):
    archive = make_archive(server, mirror, revalidate_after=0)
    first = archive.fetch("spot", "BTCUSDT", D0)
    server.clear_log()
    again = archive.fetch("spot", "BTCUSDT", D0)
    assert server.requests == [f"/{KEY}.CHECKSUM"]  # answered 304, no zip download
    (headers,) = server.headers_for(KEY + ".CHECKSUM")
    assert headers["If-None-Match"] == first.etag and headers["If-Modified-Since"] == first.last_modified
    assert again.sha256 == first.sha256 and again.previous_sha256 is None


def test_republished_day_is_downloaded_again_by_recheck(server, remote, mirror):
    archive = make_archive(server, mirror)  # revalidate_after: one day
    old = archive.fetch("spot", "BTCUSDT", D0)
    new_bytes = _republished_zip()
    server.republish(KEY, new_bytes)
    server.clear_log()
    assert archive.fetch("spot", "BTCUSDT", D0).sha256 == old.sha256  # checked recently: no request
    assert server.requests == []
    got = archive.recheck("spot", "BTCUSDT", D0)
    assert got.previous_sha256 == old.sha256 and got.sha256 == hashlib.sha256(new_bytes).hexdigest()
    assert got.republished and got.path.read_bytes() == new_bytes
    assert LocalMirror(mirror).fetch("spot", "BTCUSDT", D0).sha256 == got.sha256
    assert leftovers(mirror) == []
    server.clear_log()
    again = archive.recheck("spot", "BTCUSDT", D0)
    assert server.requests == [f"/{KEY}.CHECKSUM"] and not again.republished


def test_stale_cache_is_revalidated_after_revalidate_seconds(server, mirror):
    archive = make_archive(server, mirror, revalidate_after=0.3)
    old = archive.fetch("spot", "BTCUSDT", D0)
    server.republish(KEY, _republished_zip())
    time.sleep(0.4)
    got = archive.fetch("spot", "BTCUSDT", D0)
    assert got.previous_sha256 == old.sha256 and got.sha256 != old.sha256


def test_revalidation_while_offline_serves_the_cached_copy(remote, mirror):
    with ArchiveServer(remote) as srv:
        archive = make_archive(srv, mirror, revalidate_after=0, retries=0)
        old = archive.fetch("spot", "BTCUSDT", D0)
    assert archive.fetch("spot", "BTCUSDT", D0).sha256 == old.sha256
    with pytest.raises(ArchiveError, match="unreachable"):
        archive.recheck("spot", "BTCUSDT", D0)


# ---------------------------------------------------------------- klines


def test_klines_over_http_match_the_synthetic_archive(tmp_path, mirror):
    start = date(2024, 12, 30)
    synth = SyntheticArchive(tmp_path / "gen", seed=5, n_pairs=6, trades_per_day=3000, start=start, end=start + timedelta(days=2))
    synth.write_mirror(tmp_path / "remote", markets=("spot", "cm"), datasets=("trades", "klines"))
    with ArchiveServer(tmp_path / "remote", page_size=3) as srv:
        archive = make_archive(srv, mirror)
        for market in ("spot", "cm"):
            assert archive.list_pairs(market, "klines") == synth.list_pairs(market, "klines")
            pair = synth.list_pairs(market)[0]
            days = archive.list_days(market, pair, "klines")
            assert days == synth.list_days(market, pair, "klines")
            for day in days:
                got = archive.fetch(market, pair, day, "klines")
                assert got.path == mirror / archive_key(market, pair, day, "klines")
                assert got.path.read_bytes() == synth.klines_zip_bytes(market, pair, day)
                assert_frame_equal(read_klines_file(got.path, market), synth.normalised_klines(market, pair, day))
