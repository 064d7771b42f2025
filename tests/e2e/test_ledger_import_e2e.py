"""Every real bank, OFX and journal file of the corpus, dropped into Azurite and picked up by
the blob trigger, lands in the database as expected, or is rejected with the expected reason.
"""

from __future__ import annotations

import io
from typing import Any

import psycopg
import pytest

from shared.importers import parse_file
from tests.e2e.conftest import App
from tests.importers.corpus_expectations import CORPUS, EXPECTED, Expected


def journal_accounts(path: str, expected: Expected) -> set[str]:
    """The accounts a journal file names, so that the test client's chart can hold them."""
    with (CORPUS / path).open("rb") as data:
        parsed = parse_file(
            io.BytesIO(data.read()), name=path, default_currency=expected.default_currency
        )
        return {line.account for line in parsed.records}  # type: ignore[union-attr]


def held(app: App, import_id: int) -> dict[str, Any]:
    """Per-currency sums of what one import wrote."""
    with psycopg.connect(app.database_url) as conn:
        bank = dict(
            conn.execute(
                "SELECT currency, sum(amount_minor) FROM bank_transactions WHERE import_id = %s"
                " GROUP BY currency",
                (import_id,),
            ).fetchall()
        )
        debits = dict(
            conn.execute(
                "SELECT l.currency, sum(l.amount_minor) FROM journal_lines l"
                " JOIN journal_entries e ON e.id = l.entry_id"
                " WHERE e.import_id = %s AND e.source = 'journal_import' AND l.amount_minor > 0"
                " GROUP BY l.currency",
                (import_id,),
            ).fetchall()
        )
        unbalanced = conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM journal_lines l"
            " JOIN journal_entries e ON e.id = l.entry_id WHERE e.import_id = %s"
            " GROUP BY l.entry_id, l.currency HAVING sum(l.amount_minor) <> 0) u",
            (import_id,),
        ).fetchone()
    return {"bank": bank, "debits": debits, "unbalanced": unbalanced[0] if unbalanced else 0}


@pytest.fixture(scope="module")
def corpus_outcomes(app: App) -> dict[str, tuple[dict[str, Any], str]]:
    """Drop every corpus file at once (one client per file) and collect each outcome."""
    dropped: dict[str, tuple[str, str]] = {}
    for path, expected in EXPECTED.items():
        client = app.create_client(f"Client for {path}", expected.default_currency)
        if expected.format is not None and expected.debits:
            for n, account in enumerate(sorted(journal_accounts(path, expected))):
                status, body = app.call(
                    "POST",
                    f"/api/ops/clients/{client}/accounts",
                    {"code": f"J{n:03d}", "name": account, "type": "asset"},
                    key="e2e-master-key",
                )
                assert status == 201, body
        blob_name = f"{client}/{path.rsplit('/', 1)[1]}"
        app.drop("ledger-imports", blob_name, (CORPUS / path).read_bytes())
        dropped[path] = (blob_name, client)
    return {
        path: (app.wait_for_import(blob_name), client)
        for path, (blob_name, client) in dropped.items()
    }


@pytest.mark.parametrize("path", sorted(EXPECTED))
def test_corpus_file_lands_as_expected(app: App, corpus_outcomes, path: str) -> None:
    expected = EXPECTED[path]
    outcome, _ = corpus_outcomes[path]

    if expected.rejection is not None:
        assert (outcome["status"], outcome["reason"]) == ("rejected", expected.rejection)
        return
    if expected.row_errors:
        assert outcome["status"] == "rejected"
        assert outcome["error_count"] == expected.row_errors
        assert outcome["reason"].startswith(f"{expected.row_errors} row(s) are invalid")
        assert len(outcome["report"]["errors"]) == expected.row_errors
        return
    if expected.records == 0:
        assert (outcome["status"], outcome["reason"]) == (
            "rejected",
            "the file has no transactions",
        )
        return

    assert outcome["status"] == "imported", outcome["reason"]
    assert outcome["rows_read"] == expected.records
    report = outcome["report"]
    assert report["format"] == expected.format.value  # type: ignore[union-attr]
    assert report["date_range"] == {
        "first": expected.earliest.isoformat() if expected.earliest else None,
        "last": expected.latest.isoformat() if expected.latest else None,
    }
    sums = held(app, outcome["id"])
    assert sums["unbalanced"] == 0
    if expected.format.value == "journal_csv":  # type: ignore[union-attr]
        assert sums["debits"] == {c: v for c, v in expected.debits.items() if v}
    else:
        # Rows repeated inside one file are kept (occurrence numbers), so all rows land.
        assert outcome["imported"] == expected.records
        assert sums["bank"] == expected.totals


def test_the_same_corpus_file_dropped_again_adds_nothing(app: App, corpus_outcomes) -> None:
    path = "ofx/ofxparse__checking.ofx"
    first, client = corpus_outcomes[path]
    blob_name = f"{client}/checking-again.ofx"
    app.drop("ledger-imports", blob_name, (CORPUS / path).read_bytes())

    again = app.wait_for_import(blob_name)
    assert (again["status"], again["imported"]) == ("imported", 0)
    assert again["duplicates"] == first["rows_read"]


def test_reports_and_quarantine_land_in_blob_storage(app: App, corpus_outcomes) -> None:
    _, client = corpus_outcomes["ofx/ofxparse__checking.ofx"]
    report = (
        app.blobs.get_blob_client("ledger-reports", f"{client}/ofxparse__checking.ofx.json")
        .download_blob()
        .readall()
    )
    assert b'"status": "imported"' in report

    rejected, other = corpus_outcomes["ofx/ofxparse__signon_fail.ofx"]
    assert rejected["status"] == "rejected"
    quarantine = app.blobs.get_container_client("ledger-quarantine")
    names = {b.name for b in quarantine.list_blobs(name_starts_with=f"{other}/")}
    assert names == {
        f"{other}/ofxparse__signon_fail.ofx",
        f"{other}/ofxparse__signon_fail.ofx.report.json",
    }
    drops = app.blobs.get_container_client("ledger-imports")
    assert not list(drops.list_blobs(name_starts_with=f"{other}/"))


def test_http_lists_imports_and_serves_reports_only_to_their_client(app, corpus_outcomes):
    imported, client = corpus_outcomes["ofx/ofxparse__checking.ofx"]
    _, other = corpus_outcomes["ofx/ofxparse__bank_medium.ofx"]

    status, body = app.call("GET", f"/api/clients/{client}/imports")
    assert status == 200
    assert imported["id"] in [i["id"] for i in body["imports"]]

    status, report = app.call("GET", f"/api/clients/{client}/imports/{imported['id']}")
    assert (status, report["imported"]) == (200, imported["imported"])

    status, problem = app.call("GET", f"/api/clients/{other}/imports/{imported['id']}")
    assert status == 404
    assert problem["detail"] == f"import {imported['id']} not found"

    status, _ = app.call("GET", f"/api/clients/{client}/imports", key=None)
    assert status == 401


def test_dry_run_over_http_writes_nothing(app: App) -> None:
    client = app.create_client("Dry run client")
    data = (CORPUS / "ofx/ofxparse__checking.ofx").read_bytes()

    status, report = app.call(
        "POST", f"/api/clients/{client}/imports/dry-run?name=checking.ofx", data
    )
    assert status == 200, report
    assert (report["dry_run"], report["rows_read"]) == (
        True,
        EXPECTED["ofx/ofxparse__checking.ofx"].records,
    )
    status, listing = app.call("GET", f"/api/clients/{client}/imports")
    assert listing == {"imports": []}


def test_a_mapping_profile_lets_an_ambiguous_file_in(app: App) -> None:
    client = app.create_client("Payoneer client")
    data = (CORPUS / "bank-csv/csv2ofx__payoneer.csv").read_bytes()
    app.drop("ledger-imports", f"{client}/payoneer.csv", data)
    assert app.wait_for_import(f"{client}/payoneer.csv")["reason"].startswith(
        "dates are ambiguous"
    )

    status, stored = app.call(
        "PUT", f"/api/clients/{client}/mapping-profile", {"date_order": "MDY"}
    )
    assert (status, stored["date_order"]) == (200, "MDY")
    app.drop("ledger-imports", f"{client}/payoneer-retry.csv", data)
    outcome = app.wait_for_import(f"{client}/payoneer-retry.csv")
    assert outcome["status"] == "imported", outcome["reason"]
    assert outcome["report"]["date_range"]["first"] == "2021-05-03"


def test_a_bad_mapping_profile_is_refused_with_the_field_named(app: App) -> None:
    client = app.create_client("Profile client")
    status, problem = app.call(
        "PUT", f"/api/clients/{client}/mapping-profile", {"date_order": "DDMM"}
    )
    assert status == 400
    assert problem["detail"] == "invalid mapping profile: date_order: must be one of DMY, MDY, YMD"


def test_large_and_concurrent_drops(app: App) -> None:
    """A 50 MB file imports whole, and the same file dropped twice at once lands once."""
    client = app.create_client("Large file client")
    lines = ["Date,Description,Amount"]
    size, n = len(lines[0]) + 1, 0
    while size < 50 * 1024 * 1024:
        day = f"2025-{1 + n % 12:02d}-{1 + n % 28:02d}"
        lines.append(f"{day},Card purchase {n:08d} at a shop,-{n % 997}.{n % 100:02d}")
        size += len(lines[-1]) + 1
        n += 1
    data = ("\n".join(lines) + "\n").encode()
    assert len(data) >= 50 * 1024 * 1024

    app.drop("ledger-imports", f"{client}/big-1.csv", data)
    app.drop("ledger-imports", f"{client}/big-2.csv", data)
    first = app.wait_for_import(f"{client}/big-1.csv", timeout_s=600)
    second = app.wait_for_import(f"{client}/big-2.csv", timeout_s=600)

    assert first["status"] == second["status"] == "imported"
    assert sorted([first["imported"], second["imported"]]) == [0, n]
    assert sorted([first["duplicates"], second["duplicates"]]) == [0, n]
