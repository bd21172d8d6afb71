"""Ingest validation and the quality ledger: every archive defect injected for real (bytes in zips
in a mirror layout, read through LocalMirror / plan_day / fetch_day / read_day / read_pair_day)
ends as a clear error or a ledger row."""

import csv
import itertools
import zipfile
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mnemo_assets.binance.archive import (
    ArchiveFile,
    ArchiveSource,
    ChecksumMismatchError,
    CorruptArchiveError,
    LocalMirror,
    archive_key,
    checksum_line,
)
from mnemo_assets.binance.parse import TRADES_SCHEMA, TradesParseError, WrongMemberError, read_trades_file
from mnemo_assets.binance.quality import (
    CONSTANT_SIDE_MIN_TRADES,
    MAX_ID_RANGES,
    QUALITY_SCHEMA,
    EmptyTradesFileError,
    TradesRejectedError,
    clean_trades,
    error_row,
    ledger_frame,
    plan_ledger_rows,
    read_pair_day,
)
from mnemo_assets.binance.trades import (
    BeforeArchiveStartError,
    DayNotPublishedError,
    MissingDayError,
    UnknownPegError,
    day_trades,
    fetch_day,
    plan_day,
    read_day,
)
from mnemo_assets_tests.conftest import REALDATA, realdata_files

D = date(2024, 8, 9)
T0 = 1723161600000  # D 00:00 UTC in ms
PEGS = {"spot": ("USDT",), "um": ("USDT",), "cm": ("USD",)}
UM_HEADER = "id,price,qty,quote_qty,time,is_buyer_maker"
CM_HEADER = "id,price,qty,base_qty,time,is_buyer_maker"


def put(root: Path, market: str, pair: str, day: date, text: str | bytes, member: str | None = None) -> Path:
    """Write a trades zip (one member) and its CHECKSUM into the archive layout below ``root``."""
    path = root / archive_key(market, pair, day)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(zipfile.ZipInfo(member or f"{pair}-trades-{day}.csv"), text)
    path.with_name(path.name + ".CHECKSUM").write_text(checksum_line(path.read_bytes(), path.name))
    return path


def spot_rows(ids, times=None, prices=None, sides=None) -> str:
    ids = list(ids)
    times = times or [T0 + 1000 * k for k in range(len(ids))]
    prices = prices or [100.0 + (k % 7) for k in range(len(ids))]
    sides = sides or [k % 3 == 0 for k in range(len(ids))]
    return "".join(f"{i},{p},0.5,{p * 0.5},{t},{s},True\n" for i, t, p, s in zip(ids, times, prices, sides, strict=True))


def read_one(root: Path, text: str, market: str = "spot", pair: str = "BTCUSDT", day: date = D, member: str | None = None):
    put(root, market, pair, day, text, member)
    return read_pair_day(LocalMirror(root).fetch(market, pair, day), PEGS[market])


# ---------------------------------------------------------------- empty files


@pytest.mark.parametrize(
    "market,pair,text,header",
    [
        ("spot", "BTCUSDT", "", None),
        ("spot", "BTCUSDT", "\n", None),
        ("spot", "BTCUSDT", "\r\n\r\n", None),
        ("um", "BTCUSDT", UM_HEADER + "\n", UM_HEADER),
        ("um", "BTCUSDT", UM_HEADER, UM_HEADER),
        ("cm", "BTCUSD_PERP", CM_HEADER + "\n", CM_HEADER),
    ],
)
def test_empty_file_is_recorded_and_never_ordinary_data(tmp_path, market, pair, text, header):
    put(
        tmp_path,
        market,
        "ETHUSDT" if market != "cm" else "ETHUSD_PERP",
        D,
        spot_rows([1]) if market == "spot" else UM_HEADER.replace("quote", "base" if market == "cm" else "quote") + f"\n1,10,1,1,{T0},true\n",
    )
    pd = read_one(tmp_path, text, market, pair)
    assert pd.status == "empty" and not pd.publishable
    assert (pd.row["rows_read"], pd.row["rows_kept"], pd.row["header"]) == (0, 0, header)
    assert pd.row["reasons"][0].startswith("empty: the file holds no trades")
    assert pd.trades.height == 0 and pd.trades.schema == TRADES_SCHEMA
    # the day reader refuses it (naming the file and day) instead of dropping the pair silently
    mirror = LocalMirror(tmp_path)
    ledger: list[dict] = []
    with pytest.raises(EmptyTradesFileError, match=rf"{pair}-trades-{D}\.zip \({market} {pair} {D}\).*holds no trades"):
        list(read_day(fetch_day(mirror, market, PEGS[market], D), PEGS[market], ledger=ledger))
    assert [r["status"] for r in ledger if r["pair"] == pair] == ["empty"]
    with pytest.raises(EmptyTradesFileError):
        day_trades(mirror, market, PEGS[market], D)


# ---------------------------------------------------------------- values, duplicates, gaps, sides, days


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_non_finite_values_reject_the_file(tmp_path, value):
    text = spot_rows(range(1, 6)).replace(",100.0,", f",{value},", 1)
    pd = read_one(tmp_path, text)
    assert pd.status == "rejected" and pd.row["non_finite_values"] == 1
    assert pd.blocking[0] == "non_finite_values: 1 row(s) with NaN or inf at line 1"  # -inf is also <= 0
    with pytest.raises(TradesRejectedError, match=rf"BTCUSDT-trades-{D}\.zip \(spot BTCUSDT {D}\): rejected: non_finite"):
        list(read_day([LocalMirror(tmp_path).fetch("spot", "BTCUSDT", D)], ["USDT"]))


def test_identical_duplicates_are_dropped_and_counted(tmp_path):
    lines = spot_rows(range(1, 11)).splitlines(keepends=True)
    text = "".join(lines[:5] + [lines[2], lines[3]] + lines[5:] + [lines[9]])  # ids 3, 4 and 10 twice
    pd = read_one(tmp_path, text)
    assert pd.status == "degraded" and pd.publishable
    assert (pd.row["rows_read"], pd.row["rows_kept"], pd.row["duplicate_ids_dropped"], pd.row["duplicate_ids_conflicting"]) == (13, 10, 3, 0)
    assert pd.trades.get_column("trade_id").to_list() == list(range(1, 11))
    assert pd.row["reasons"] == ["duplicate_ids_dropped: 3 identical duplicate row(s) dropped"]
    once = read_trades_file(put(tmp_path / "x", "spot", "BTCUSDT", D, spot_rows(range(1, 11))), "spot")
    assert day_trades(LocalMirror(tmp_path), "spot", ["USDT"], D).get_column("qty").sum() == once.get_column("qty").sum()


def test_conflicting_duplicates_reject_naming_ids_and_lines(tmp_path):
    lines = spot_rows(range(1, 6)).splitlines(keepends=True)
    text = "".join(lines[:3] + [lines[1].replace(",101.0,", ",999.0,", 1)] + lines[3:] + [lines[1]])
    pd = read_one(tmp_path, text)
    assert pd.status == "rejected"
    assert (pd.row["duplicate_ids_conflicting"], pd.row["duplicate_ids_dropped"]) == (1, 1)
    assert "duplicate_ids_conflicting: 1 trade id(s) with different rows: id 2 at lines 2, 4, 7" in pd.blocking
    with pytest.raises(TradesRejectedError, match="id 2 at lines 2, 4, 7"):
        list(read_day([LocalMirror(tmp_path).fetch("spot", "BTCUSDT", D)], ["USDT"]))


def test_id_gaps_are_reported_with_ranges(tmp_path):
    ids = list(range(1, 101)) + list(range(3101, 3201)) + [3203]
    pd = read_one(tmp_path, spot_rows(ids, times=[T0 + k for k in range(len(ids))]))
    assert pd.status == "degraded"
    row = pd.row
    assert (row["id_gaps"], row["missing_ids"], row["first_trade_id"], row["last_trade_id"]) == (2, 3002, 1, 3203)
    assert row["missing_id_ranges"] == [{"first": 101, "last": 3100}, {"first": 3201, "last": 3202}]
    assert row["reasons"] == ["id_gaps: 2 gap(s), 3002 missing id(s) between 1 and 3203: 101..3100, 3201..3202"]


def test_missing_id_ranges_are_capped(tmp_path):
    ids = list(range(1, 2 * (MAX_ID_RANGES + 20), 2))  # every other id: MAX_ID_RANGES + 19 gaps
    pd = read_one(tmp_path, spot_rows(ids, times=[T0 + k for k in range(len(ids))]))
    assert pd.row["id_gaps"] == MAX_ID_RANGES + 19 == pd.row["missing_ids"]
    assert len(pd.row["missing_id_ranges"]) == MAX_ID_RANGES  # truncated exactly when id_gaps > its length
    assert f"({MAX_ID_RANGES + 19} ranges)" in pd.row["reasons"][0]


def test_out_of_day_rows_are_counted_and_block(tmp_path):
    times = [T0 - 1, T0, T0 + 5, T0 + 86_400_000, T0 + 86_400_001]
    pd = read_one(tmp_path, spot_rows(range(1, 6), times=times))
    assert pd.status == "rejected" and pd.row["out_of_day_rows"] == 3
    assert pd.blocking == (
        f"out_of_day_rows: 3 trade(s) outside {D} (from 2024-08-08 23:59:59.999000 to 2024-08-10 00:00:00.001000; "
        "lines 1, 4, 5): they would land in another day's partition",
    )
    assert pd.row["first_trade_time"] == datetime(2024, 8, 8, 23, 59, 59, 999000)


def test_far_out_of_day_times_never_crash_the_message(tmp_path):
    """A µs time in year 5000 is still a µs value: out of the day, reported, not a crash."""
    far = int((datetime(5000, 1, 1) - datetime(1970, 1, 1)).total_seconds()) * 10**6
    pd = read_one(tmp_path, spot_rows([1, 2], times=[T0 * 1000, far]))
    assert pd.status == "rejected" and pd.row["out_of_day_rows"] == 1 and "5000-01-01" in pd.blocking[0]


@pytest.mark.parametrize(
    "n,side,status",
    [
        (CONSTANT_SIDE_MIN_TRADES, True, "degraded"),
        (CONSTANT_SIDE_MIN_TRADES + 5, False, "degraded"),
        (5, True, "ok"),
        (CONSTANT_SIDE_MIN_TRADES, None, "ok"),
    ],
)
def test_constant_taker_side_is_flagged(tmp_path, n, side, status):
    sides = [k % 2 == 0 for k in range(n)] if side is None else [side] * n
    pd = read_one(tmp_path, spot_rows(range(n), times=[T0 + k for k in range(n)], sides=sides))
    assert pd.status == status and pd.row["constant_taker_side"] is (side is not None)
    if status == "degraded":
        assert pd.row["reasons"][0].startswith(f"constant_taker_side: all {n} trades are")


def test_clean_trades_are_sorted_by_time_then_id(tmp_path):
    pd = read_one(tmp_path, spot_rows([5, 4, 3, 1, 2], times=[T0 + 2, T0 + 1, T0 + 1, T0, T0]))
    assert pd.status == "ok"
    assert pd.trades.get_column("trade_id").to_list() == [1, 2, 3, 4, 5]


# ---------------------------------------------------------------- unreadable files


@pytest.mark.parametrize(
    "member",
    [
        "ETHUSDT-trades-2024-08-09.csv",
        "BTCUSDT-trades-2024-08-08.csv",
        "../x.csv",
        "/etc/BTCUSDT-trades-2024-08-09.csv",
        "a\\BTCUSDT-trades-2024-08-09.csv",
    ],
)
def test_wrong_zip_member_is_rejected(tmp_path, member):
    pd = read_one(tmp_path, spot_rows([1]), member=member)
    assert pd.status == "rejected" and isinstance(pd.error, WrongMemberError)
    assert pd.row["reasons"][0].startswith("unreadable: ") and repr(member) in pd.row["reasons"][0]
    assert "BTCUSDT-trades-2024-08-09.zip" in pd.row["reasons"][0]
    with pytest.raises(WrongMemberError, match=r"BTCUSDT-trades-2024-08-09\.zip"):
        list(read_day([LocalMirror(tmp_path).fetch("spot", "BTCUSDT", D)], ["USDT"]))


def test_corrupt_zip_and_malformed_rows_keep_their_errors(tmp_path):
    path = put(tmp_path, "spot", "BTCUSDT", D, spot_rows([1, 2]))
    path.write_bytes(b"PK\x03\x04 not a zip")
    path.with_name(path.name + ".CHECKSUM").write_text(checksum_line(path.read_bytes(), path.name))
    pd = read_pair_day(LocalMirror(tmp_path).fetch("spot", "BTCUSDT", D), ["USDT"])
    assert pd.status == "rejected" and isinstance(pd.error, CorruptArchiveError) and pd.row["rows_read"] is None
    put(tmp_path, "spot", "ETHUSDT", D, spot_rows([1, 2]).replace("0.5", "x", 1))
    with pytest.raises(TradesParseError, match=r"ETHUSDT-trades-2024-08-09\.zip: line 1 is malformed"):
        list(read_day([LocalMirror(tmp_path).fetch("spot", "ETHUSDT", D)], ["USDT"]))


def test_checksum_mismatch_fails_the_fetch_and_has_a_ledger_row(tmp_path):
    path = put(tmp_path, "spot", "BTCUSDT", D, spot_rows([1, 2]))
    path.with_name(path.name + ".CHECKSUM").write_text("0" * 64 + f"  {path.name}\n")
    with pytest.raises(ChecksumMismatchError, match=r"BTCUSDT-trades-2024-08-09\.zip") as err:
        fetch_day(LocalMirror(tmp_path), "spot", ["USDT"], D)
    row = error_row("spot", "BTCUSDT", D, err.value, ["USDT"], source=str(path))
    assert ledger_frame([row]).row(0, named=True)["status"] == "rejected"


def test_ns_times_are_a_clear_error_through_read_day(tmp_path):
    put(tmp_path, "spot", "BTCUSDT", D, spot_rows([1, 2], times=[T0 * 10**6, T0 * 10**6 + 1]))
    with pytest.raises(TradesParseError, match=r"BTCUSDT-trades-2024-08-09\.zip: trade time 1723161600000000001 at line 2 is in nanoseconds"):
        list(read_day(fetch_day(LocalMirror(tmp_path), "spot", ["USDT"], D), ["USDT"]))


def test_header_spellings_through_the_mirror(tmp_path):
    put(tmp_path, "um", "BTCUSDT", D, f"trade_id,price,qty,quoteQty,time,isBuyerMaker\n1,10,1,10,{T0},true\n2,11,1,11,{T0 + 1},false\n")
    pd = read_pair_day(LocalMirror(tmp_path).fetch("um", "BTCUSDT", D), ["USDT"])
    assert pd.status == "ok" and pd.row["header"] == "trade_id,price,qty,quoteQty,time,isBuyerMaker"


def test_bad_pair_or_file_name_in_an_archive_file(tmp_path):
    path = put(tmp_path, "spot", "BTCUSDT", D, spot_rows([1]))
    pd = read_pair_day(ArchiveFile("spot", "ETHUSDT", D, path, "x"), ["USDT"])
    assert pd.status == "rejected" and "does not name ETHUSDT" in pd.blocking[0]
    pd = read_pair_day(ArchiveFile("spot", "../../BTCUSDT", D, path, "x"), ["USDT"])
    assert pd.status == "rejected" and "not an archive pair name" in pd.blocking[0]


@dataclass(frozen=True)
class HttpFile(ArchiveFile):
    url: str | None = None
    size: int | None = None
    etag: str | None = None
    last_modified: str | None = None
    previous_sha256: str | None = None


def test_source_attributes_and_republished_file(tmp_path):
    path = put(tmp_path, "spot", "BTCUSDT", D, spot_rows([1, 2]))
    plain = read_pair_day(LocalMirror(tmp_path).fetch("spot", "BTCUSDT", D), ["USDT"])
    assert (plain.row["source"], plain.row["file_size"], plain.row["etag"]) == (str(path), path.stat().st_size, None)
    f = HttpFile(
        "spot",
        "BTCUSDT",
        D,
        path,
        "a" * 64,
        url="https://x/BTCUSDT.zip",
        size=123,
        etag='"e"',
        last_modified="Sat, 10 Aug 2024 08:00:00 GMT",
        previous_sha256="b" * 64,
    )
    pd = read_pair_day(f, ["USDT"])
    assert (pd.row["source"], pd.row["file_size"], pd.row["etag"], pd.row["last_modified"]) == (
        "https://x/BTCUSDT.zip",
        123,
        '"e"',
        "Sat, 10 Aug 2024 08:00:00 GMT",
    )
    assert pd.status == "degraded" and pd.row["reasons"] == [f"previous_sha256: the archive re-published the file (sha256 was {'b' * 64})"]


def test_read_day_reads_one_pair_day_at_a_time(tmp_path):
    put(tmp_path, "spot", "AAAUSDT", D, spot_rows([1, 2]))
    put(tmp_path, "spot", "BBBUSDT", D, "")
    frames = read_day(fetch_day(LocalMirror(tmp_path), "spot", ["USDT"], D), ["USDT"])
    assert next(frames).height == 2  # the first pair is yielded before the second is read
    with pytest.raises(EmptyTradesFileError, match="BBBUSDT"):
        next(frames)


# ---------------------------------------------------------------- plan_day


DAYS = [date(2024, 8, 5) + timedelta(days=k) for k in range(5)]  # D1..D5, D5 = D
LAYOUT = {
    "AAAUSDT": [0, 1, 2, 3, 4],
    "BBBUSDT": [0, 1, 3, 4],  # a hole on D3
    "CCCUSDT": [2, 3, 4],  # listed on D3
    "DDDUSDT": [0, 1],  # delisted after D2
    "EEEUSDT": [0, 1, 2, 3],  # last file D4; D5 is the newest day
    "FFFBTC": [0, 1, 2, 3, 4],  # another peg
}


@pytest.fixture
def mirror(tmp_path) -> LocalMirror:
    for pair, idx in LAYOUT.items():
        for k in idx:
            t = int((datetime.combine(DAYS[k], datetime.min.time()) - datetime(1970, 1, 1)).total_seconds() * 1000)
            put(tmp_path, "spot", pair, DAYS[k], spot_rows([10 * k + 1, 10 * k + 2], times=[t, t + 1]))
    return LocalMirror(tmp_path)


def statuses(plan) -> dict[str, str]:
    return {p.pair: p.status for p in plan.pairs}


def test_plan_classifies_every_configured_pair(mirror):
    plan = plan_day(mirror, "spot", ["USDT"], DAYS[2])
    assert statuses(plan) == {"AAAUSDT": "present", "BBBUSDT": "missing", "CCCUSDT": "present", "DDDUSDT": "delisted", "EEEUSDT": "present"}
    evidence = {p.pair: p.evidence for p in plan.pairs}
    assert evidence["BBBUSDT"] == f"a hole: files on {DAYS[1]} and {DAYS[3]} but not on {DAYS[2]}"
    assert evidence["DDDUSDT"].startswith(f"after its last file ({DAYS[1]}")
    assert [f.pair for f in plan.files] == ["AAAUSDT", "CCCUSDT", "EEEUSDT"]
    assert statuses(plan_day(mirror, "spot", ["USDT"], DAYS[1]))["CCCUSDT"] == "not_listed"
    with pytest.raises(MissingDayError, match=r"missing for 1 pair\(s\): BBBUSDT \(missing: a hole") as err:
        fetch_day(mirror, "spot", ["USDT"], DAYS[2])
    rows = ledger_frame(plan_ledger_rows(err.value.plan))
    assert rows.select("pair", "status", "symbol", "peg_symbol").rows() == [("BBBUSDT", "missing", "BBB", "USDT")]
    assert rows.schema == QUALITY_SCHEMA and rows["reasons"][0][0].startswith("missing: a hole")


def test_a_pair_stored_before_is_missing_on_its_first_or_last_listed_day(mirror):
    """Re-running a day must not drop a pair because the archive lost its first or last file."""
    plan = plan_day(mirror, "spot", ["USDT"], DAYS[1], expected_pairs=["CCCUSDT", "AAAUSDT"])
    assert statuses(plan)["CCCUSDT"] == "missing"
    assert (
        "stored for 2024-08-06 before, but the archive has no file for it (before its first file (2024-08-07))"
        in ({p.pair: p.evidence for p in plan.pairs}["CCCUSDT"])
    )
    plan = plan_day(mirror, "spot", ["USDT"], DAYS[3], expected_pairs=[("DDD", "USDT")])
    assert statuses(plan)["DDDUSDT"] == "missing"
    with pytest.raises(MissingDayError, match="DDDUSDT"):
        fetch_day(mirror, "spot", ["USDT"], DAYS[3], expected_pairs=[("DDD", "USDT")])
    # a stored pair the archive no longer lists at all
    plan = plan_day(mirror, "spot", ["USDT"], DAYS[3], expected_pairs=["ZZZUSDT", "QQQBTC"])
    assert statuses(plan)["ZZZUSDT"] == "missing" and "QQQBTC" not in statuses(plan)  # BTC is not a configured peg


def test_newest_day_without_a_pairs_file_is_pending(mirror):
    plan = plan_day(mirror, "spot", ["USDT"], DAYS[4])
    assert statuses(plan)["EEEUSDT"] == "pending" and statuses(plan)["DDDUSDT"] == "delisted"
    with pytest.raises(DayNotPublishedError, match=r"not published yet for 1 pair\(s\) \(latest day in the archive: 2024-08-09\): EEEUSDT"):
        fetch_day(mirror, "spot", ["USDT"], DAYS[4])
    rows = plan_ledger_rows(plan)
    assert [(r["pair"], r["status"], r["reasons"][0][:17]) for r in rows] == [("EEEUSDT", "missing", "not published yet")]


def test_expired_delivery_contract_is_delisted_not_pending(tmp_path):
    for k, day in enumerate([D - timedelta(days=1), D]):
        put(tmp_path, "um", "BTCUSDT", day, f"{UM_HEADER}\n{k},10,1,10,{T0 - 86_400_000 * (1 - k)},true\n")
    put(tmp_path, "um", "BTCUSDT_240808", D - timedelta(days=1), f"{UM_HEADER}\n1,10,1,10,{T0 - 86_400_000},true\n")
    plan = plan_day(LocalMirror(tmp_path), "um", ["USDT"], D, contracts="all")
    assert statuses(plan) == {"BTCUSDT": "present", "BTCUSDT_240808": "delisted"}
    assert "expired on 2024-08-08" in plan.pairs[1].evidence


def test_listed_file_absent_at_fetch_is_missing(mirror):
    class StaleListing(LocalMirror):
        def list_days(self, market, pair):
            days = super().list_days(market, pair)
            return sorted(set(days) | {DAYS[2]}) if pair == "BBBUSDT" else days

    stale = StaleListing(mirror.root)
    with pytest.raises(MissingDayError, match=r"BBBUSDT \(missing: listed by the archive for 2024-08-07, but not found: .*no trades file") as err:
        fetch_day(stale, "spot", ["USDT"], DAYS[2])
    assert statuses(err.value.plan)["BBBUSDT"] == "missing"


def test_whole_day_errors_are_distinct(mirror):
    with pytest.raises(BeforeArchiveStartError, match=r"2024-08-04 is before the first archive day of spot \(2024-08-05\)"):
        plan_day(mirror, "spot", ["USDT"], DAYS[0] - timedelta(days=1))
    with pytest.raises(DayNotPublishedError, match=r"no spot trades published for 2024-08-10 yet \(latest day in the archive: 2024-08-09\)"):
        plan_day(mirror, "spot", ["USDT"], DAYS[4] + timedelta(days=1))
    with pytest.raises(UnknownPegError, match=r"no spot pair ends with peg XYZ \(the archive lists 6 spot pairs"):
        plan_day(mirror, "spot", ["XYZ"], DAYS[2])
    with pytest.raises(DayNotPublishedError, match="lists no um pairs"):
        plan_day(mirror, "um", ["USDT"], DAYS[2])
    assert plan_day(mirror, "spot", ["USDT", "XYZ"], DAYS[2]).unmatched_pegs == ("XYZ",)
    assert not issubclass(UnknownPegError, MissingDayError) and not issubclass(BeforeArchiveStartError, MissingDayError)


def test_hostile_pair_names_never_escape_the_root(tmp_path):
    put(tmp_path, "spot", "BTCUSDT", D, spot_rows([1]))

    class Hostile(ArchiveSource):
        inner = LocalMirror(tmp_path)

        def list_pairs(self, market):
            return ["../../etc/passwdUSDT", "..", "btcusdt", "A/BUSDT", "BTCUSDT", "C\\DUSDT"]

        def list_days(self, market, pair):
            assert pair == "BTCUSDT", pair
            return self.inner.list_days(market, pair)

        def fetch(self, market, pair, day):
            assert pair == "BTCUSDT", pair
            return self.inner.fetch(market, pair, day)

    plan = plan_day(Hostile(), "spot", ["USDT"], D)
    assert statuses(plan) == {"BTCUSDT": "present"}
    assert set(plan.ignored_names) == {"../../etc/passwdUSDT", "..", "btcusdt", "A/BUSDT", "C\\DUSDT"}
    assert [f.pair for f in fetch_day(Hostile(), "spot", ["USDT"], D, expected_pairs=["../x/USDT"])] == ["BTCUSDT"]


def test_ledger_frame_schema():
    assert ledger_frame([]).schema == QUALITY_SCHEMA
    with pytest.raises(ValueError, match="status"):
        ledger_frame([{"status": "fine"}])


# ---------------------------------------------------------------- real data


def csv_rows(path: Path) -> list[list[str]]:
    rows = list(csv.reader(path.read_text().splitlines()))
    return rows[1:] if not rows[0][0].isdigit() else rows


@pytest.mark.parametrize("path,market", realdata_files(), ids=lambda v: getattr(v, "name", v))
def test_realdata_files_are_ok_with_exact_facts(tmp_path, path, market):
    pair, day_text = path.name.replace(".partial", "").removesuffix(".csv").split("-trades-")
    day = date.fromisoformat(day_text)
    put(tmp_path, market, pair, day, path.read_bytes())
    pd = read_pair_day(LocalMirror(tmp_path).fetch(market, pair, day), PEGS[market])
    rows = csv_rows(path)
    ids = [int(r[0]) for r in rows]
    times_ms = [int(r[4]) for r in rows]
    assert pd.status == "ok", pd.row["reasons"]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # the README's facts: contiguous, monotonic
    assert times_ms == sorted(times_ms)
    row = pd.row
    assert (row["rows_read"], row["rows_kept"], row["first_trade_id"], row["last_trade_id"]) == (len(rows), len(rows), ids[0], ids[-1])
    assert (row["id_gaps"], row["missing_ids"], row["missing_id_ranges"], row["duplicate_ids_dropped"]) == (0, 0, [], 0)
    assert (row["out_of_day_rows"], row["non_finite_values"], row["time_unit"]) == (0, 0, "ms")
    assert row["header"] == (None if market == "spot" else path.read_text().splitlines()[0])
    assert row["first_trade_time"] == datetime(1970, 1, 1) + timedelta(milliseconds=times_ms[0])
    assert row["last_trade_time"] == datetime(1970, 1, 1) + timedelta(milliseconds=times_ms[-1])
    assert pd.trades.equals(read_trades_file(path, market))
    assert ledger_frame([pd]).schema == QUALITY_SCHEMA


def test_realdata_2025_microseconds(tmp_path):
    src = REALDATA / "spot/trades/BTCUSDT-trades-2024-08-09.partial.csv"
    shift_ms = (date(2025, 8, 9) - date(2024, 8, 9)).days * 86_400_000
    rows = csv_rows(src)
    for r in rows:
        r[4] = str((int(r[4]) + shift_ms) * 1000 + 7)
    put(tmp_path, "spot", "BTCUSDT", date(2025, 8, 9), "\n".join(",".join(r) for r in rows) + "\n")
    pd = read_pair_day(LocalMirror(tmp_path).fetch("spot", "BTCUSDT", date(2025, 8, 9)), ["USDT"])
    assert pd.status == "ok" and pd.row["time_unit"] == "us" and pd.row["rows_kept"] == 10166
    assert pd.row["first_trade_time"] == datetime(1970, 1, 1) + timedelta(microseconds=int(rows[0][4]))


def test_realdata_day_through_plan_and_read_day(tmp_path):
    for path in sorted((REALDATA / "spot/trades").glob("*-2024-08-0[89].partial.csv")):
        pair, day_text = path.name.replace(".partial", "").removesuffix(".csv").split("-trades-")
        put(tmp_path, "spot", pair, date.fromisoformat(day_text), path.read_bytes())
    ledger: list[dict] = []
    mirror = LocalMirror(tmp_path)
    frames = list(read_day(fetch_day(mirror, "spot", ["USDT"], D), ["USDT"], ledger=ledger))
    assert [f.height for f in frames] == [10166, 8417]
    assert ledger_frame(ledger).select("pair", "status").rows() == [("BTCUSDT", "ok"), ("ETHUSDT", "ok")]


# ---------------------------------------------------------------- duplicates and gaps against a loop oracle


def oracle(rows: list[tuple]) -> dict:
    """Slow, obvious reading of ids: rows are (trade_id, price, qty, quote_qty, time_us, side)."""
    versions: dict[int, list[tuple]] = {}
    lines: dict[int, list[int]] = {}
    for n, r in enumerate(rows, start=1):
        if r not in versions.setdefault(r[0], []):
            versions[r[0]].append(r)
        lines.setdefault(r[0], []).append(n)
    kept = [r for v in versions.values() for r in v]
    ids = sorted(versions)
    ranges = []
    for a, b in itertools.pairwise(ids):
        if b - a > 1:
            ranges.append((a + 1, b - 1))
    conflicting = [i for i in ids if len(versions[i]) > 1]
    return {
        "kept": sorted(kept, key=lambda r: (r[4], r[0])),
        "dropped": len(rows) - len(kept),
        "conflicting": len(conflicting),
        "conflicts": tuple((i, tuple(lines[i])) for i in conflicting[:10]),
        "gaps": len(ranges),
        "missing": sum(b - a + 1 for a, b in ranges),
        "ranges": tuple(ranges),
        "first": ids[0] if ids else None,
        "last": ids[-1] if ids else None,
    }


@st.composite
def id_rows(draw):
    rows: list[tuple] = []
    for _ in range(draw(st.integers(0, 40))):
        if rows and draw(st.integers(0, 3)) == 0:
            rows.append(draw(st.sampled_from(rows)))  # an identical duplicate
        else:
            rows.append(
                (
                    draw(st.one_of(st.integers(0, 30), st.integers(10**12, 10**12 + 5))),
                    draw(st.sampled_from([1.0, 2.0, 2.5])),
                    1.0,
                    1.0,
                    draw(st.integers(0, 4)) * 1000,
                    draw(st.booleans()),
                )
            )
    return rows


@settings(max_examples=300, deadline=None)
@given(rows=id_rows(), max_ranges=st.integers(1, 5))
def test_clean_trades_matches_the_loop_oracle(rows, max_ranges):
    frame = pl.DataFrame(
        {
            "symbol": ["X"] * len(rows),
            "peg_symbol": ["USDT"] * len(rows),
            "trade_id": [r[0] for r in rows],
            "price": [r[1] for r in rows],
            "qty": [r[2] for r in rows],
            "quote_qty": [r[3] for r in rows],
            "time": [datetime(2024, 8, 9) + timedelta(microseconds=r[4]) for r in rows],
            "is_buyer_maker": [r[5] for r in rows],
        },
        schema=TRADES_SCHEMA,
    )
    clean, facts = clean_trades(frame, first_line=1, max_ranges=max_ranges)
    want = oracle(rows)
    got = [
        (
            r["trade_id"],
            r["price"],
            r["qty"],
            r["quote_qty"],
            int((r["time"] - datetime(2024, 8, 9)) / timedelta(microseconds=1)),
            r["is_buyer_maker"],
        )
        for r in clean.iter_rows(named=True)
    ]
    assert sorted(got) == sorted(want["kept"])
    assert [(r[4], r[0]) for r in got] == [(r[4], r[0]) for r in want["kept"]]  # sorted by (time, id)
    assert (facts.rows_read, facts.rows_kept, facts.duplicates_dropped) == (len(rows), len(want["kept"]), want["dropped"])
    assert (facts.conflicting, facts.conflicts) == (want["conflicting"], want["conflicts"])
    assert (facts.gaps, facts.missing_ids, facts.missing_ranges) == (want["gaps"], want["missing"], want["ranges"][:max_ranges])
    assert (facts.first_id, facts.last_id) == (want["first"], want["last"])
