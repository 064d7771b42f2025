"""Ledger import: a file from ``ledger-imports/<client id>/<name>`` is imported whole or
rejected whole, with a report either way.

The file is parsed as a stream into a staging table inside one transaction; dedupe,
validation against the chart of accounts and posting are set-based SQL in that same
transaction, so nothing of a rejected file is ever committed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any, BinaryIO

import psycopg
from psycopg.copy import LibpqWriter

from shared import telemetry
from shared.adapters import blob, postgres
from shared.config import (
    LEDGER_IMPORTS_CONTAINER,
    LEDGER_QUARANTINE_CONTAINER,
    LEDGER_REPORT_MAX_ERRORS,
    LEDGER_REPORTS_CONTAINER,
    get_settings,
)
from shared.domain.imports import BankTxn, FileFormat, JournalLine, MappingProfile, RowError
from shared.domain.money import Money
from shared.errors import NotFound, ValidationError
from shared.importers import UnsupportedFile, parse_file
from shared.services import audit

log = logging.getLogger(__name__)

# Amounts beyond this many minor units are refused: no real statement line is that large,
# and it keeps every sum far inside a 64-bit integer.
MAX_ABS_AMOUNT_MINOR = 10**15

# The dedupe key of a bank row without a FITID: its booked date (yyyymmdd), then the first
# 144 bits of the SHA-256 of its booked date, amount in minor units, currency and description
# (whitespace collapsed, case folded), base64. ``key_text`` carries the folded description
# when SQL's ASCII lower() of the description would not give it. The date comes first so
# that a file's keys, like its rows, run in date order: the unique (account, key) index then
# takes them in a few hot pages instead of one random page per row (about 30% less database
# CPU for inserting a million rows; see migration 0015, which keyed older rows the same way).
ROW_KEY_SQL = """to_char(s.booked_on, 'YYYYMMDD') || ':' || encode(substr(sha256(convert_to(
    concat_ws('|', s.booked_on, s.amount_minor, s.currency,
              coalesce(s.key_text, lower(s.description COLLATE "C"))), 'UTF8')), 1, 18),
    'base64')"""

# A folder ``account-<label>`` in a blob's path names the bank account of its files.
ACCOUNT_FOLDER_PREFIX = "account-"

# Memory one import's sorts may use in Postgres, in MB.
IMPORT_WORK_MEM_MB = 128

# From this many staged rows, an import's joins against the ledger are hash joins whatever
# the statistics say. Right after a large import commits, the statistics of the ledger tables
# still describe them as they were before it; a plan built on them could probe a million
# staged rows one by one against a table the planner thinks small, which once ran for more
# than ten minutes where the hash join takes seconds.
LARGE_IMPORT_ROWS = 50_000

# Staged rows are sent to COPY in batches of this many: fewer calls, bounded memory.
COPY_BATCH_ROWS = 2000
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})

UNCATEGORISED_INCOME = ("UNCATEGORISED-INCOME", "Uncategorised income", "income")
UNCATEGORISED_EXPENSE = ("UNCATEGORISED-EXPENSE", "Uncategorised expense", "expense")


class Rejected(ValidationError):
    """The file cannot be imported; ``errors`` names each bad row when there are any."""

    def __init__(self, reason: str, errors: Iterable[RowError] = (), error_count: int = 0):
        super().__init__(reason)
        self.reason = reason
        self.errors = list(errors)[:LEDGER_REPORT_MAX_ERRORS]
        self.error_count = max(error_count, len(self.errors))


@dataclass(frozen=True, slots=True)
class Client:
    """The importing client, as far as an import needs it."""

    id: uuid.UUID
    base_currency: str
    profile: MappingProfile


@dataclass(slots=True)
class _Tally:
    """Counts and totals gathered while the file streams into staging."""

    rows: int = 0
    first: date | None = None
    last: date | None = None
    totals: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, booked_on: date, currency: str, inflow: int, outflow: int) -> None:
        self.rows += 1
        if self.first is None or booked_on < self.first:
            self.first = booked_on
        if self.last is None or booked_on > self.last:
            self.last = booked_on
        bucket = self.totals.setdefault(currency, {"count": 0, "in": 0, "out": 0})
        bucket["count"] += 1
        bucket["in"] += inflow
        bucket["out"] += outflow


@dataclass(frozen=True, slots=True)
class ImportOutcome:
    """What happened to one file: ``imported``, ``rejected`` or ``already_processed``."""

    status: str
    import_id: int | None
    report: dict[str, Any]
    report_location: str | None


def split_blob_name(blob_name: str) -> tuple[str, str]:
    """Split ``<client id>/<file name>`` (the path inside the container).

    Raises:
        Rejected: the name has no client folder.
    """
    client_part, sep, file_name = blob_name.partition("/")
    if not sep or not client_part or not file_name:
        raise Rejected(
            f"blob {blob_name!r} is not in a client folder; "
            f"drop files at {LEDGER_IMPORTS_CONTAINER}/<client id>/<file name>"
        )
    try:
        canonical = str(uuid.UUID(client_part))
    except ValueError:
        raise Rejected(f"unknown client {client_part!r}: not a client id") from None
    if canonical != client_part:
        # Reports live beside the file; one spelling per client keeps them in one folder.
        raise Rejected(f"client folder {client_part!r} must be written as {canonical}")
    return client_part, file_name


def account_folder(file_name: str) -> str:
    """The bank account a path names: its last ``account-<label>`` folder, if any.

    Other folders only organise files (by month, by person) and name no account.
    """
    label = ""
    for part in file_name.split("/")[:-1]:
        if part[:8].casefold() == ACCOUNT_FOLDER_PREFIX:
            label = " ".join(part[8:].split()).casefold()
    return label


def import_blob(blob_name: str) -> ImportOutcome:
    """Import the blob ``ledger-imports/<blob_name>``, or reject it to quarantine.

    Safe to call again for the same blob version: a version already handled is answered
    from its stored report (and the report blob is written again), nothing is posted twice.

    Raises:
        UpstreamError: storage or the database failed; the caller should retry.
    """
    started = datetime.now(UTC)
    with tempfile.TemporaryFile() as spool:
        try:
            info = blob.download(LEDGER_IMPORTS_CONTAINER, blob_name, spool)
        except NotFound:
            log.warning("blob gone before import: %s", blob_name, extra={"blob": blob_name})
            return ImportOutcome("already_processed", None, {}, None)

        done = _find_import(blob_name, info.etag)
        if done is not None:
            _publish(done)
            log.warning("blob version already handled: %s", blob_name, extra={"blob": blob_name})
            return ImportOutcome("already_processed", done.import_id, done.report, None)

        header = {
            "file": f"{LEDGER_IMPORTS_CONTAINER}/{blob_name}",
            "blob_version": info.etag,
            "sha256": info.sha256,
            "size_bytes": info.size,
        }
        try:
            client_part, file_name = split_blob_name(blob_name)
            limit = get_settings().ledger_import_max_bytes
            if info.size > limit:
                raise Rejected(
                    f"file is {info.size} bytes, over the import limit of "
                    f"{limit} bytes (LEDGER_IMPORT_MAX_BYTES)"
                )
            with postgres.transaction() as conn:
                client = _load_client(conn, client_part)
                outcome = _import(conn, client, spool, file_name, header, started, blob_name)
                # The ledger's commit-time checks run now instead of inside COMMIT, so that
                # their cost shows apart from the commit's in the log line below.
                checking = time.perf_counter()
                conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
                committing = time.perf_counter()
            _log_imported(
                outcome, blob_name, committing - checking, time.perf_counter() - committing
            )
        except psycopg.errors.DataError as exc:
            # Text Postgres cannot hold (a NUL byte, a character outside UTF-8) fails the
            # whole file like any bad row, rather than retrying forever.
            reason = exc.diag.message_primary or str(exc)
            outcome = _reject(
                blob_name,
                header,
                started,
                Rejected(f"the file holds data the ledger cannot store: {reason}"),
                spool,
            )
        except psycopg.errors.CheckViolation as exc:
            # The database refuses postings dated in a closed period (month-end close).
            reason = exc.diag.message_primary or str(exc)
            if "are closed through" not in reason:
                raise
            outcome = _reject(
                blob_name,
                header,
                started,
                Rejected(f"the file has transactions in a closed period: {reason}"),
                spool,
            )
        except Rejected as rejected:
            outcome = _reject(blob_name, header, started, rejected, spool)
        _publish(outcome)
        return outcome


def preview(client_id: str, data: bytes, file_name: str) -> dict[str, Any]:
    """Return the report importing ``data`` would produce, writing nothing (a dry run).

    Sibling of ``import_blob``; the same parsing, validation and dedupe run in a
    transaction that is always rolled back.

    Raises:
        NotFound: no such client.
    """
    header = {
        "file": file_name,
        "dry_run": True,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size_bytes": len(data),
    }
    started = datetime.now(UTC)
    with tempfile.TemporaryFile() as spool:
        spool.write(data)
        spool.seek(0)
        try:
            with postgres.transaction() as conn:
                try:
                    client = _load_client(conn, client_id)
                except Rejected as exc:
                    raise NotFound(exc.reason) from None
                outcome = _import(conn, client, spool, file_name, header, started, None)
                # Nothing is kept: say so, and show no import id that will never exist.
                report = {**outcome.report, "status": "would_import"}
                report.pop("import_id", None)
                raise _DryRunDone(report)
        except _DryRunDone as done:
            return done.report
        except psycopg.errors.DataError as exc:
            reason = exc.diag.message_primary or str(exc)
            rejected = Rejected(f"the file holds data the ledger cannot store: {reason}")
            return _rejection_report(header, started, rejected)
        except Rejected as rejected:
            return _rejection_report(header, started, rejected)


class _DryRunDone(Exception):
    """Carries a dry run's report out of its transaction so that the transaction rolls back."""

    def __init__(self, report: dict[str, Any]):
        super().__init__("dry run")
        self.report = report


def _load_client(conn: psycopg.Connection, client_part: str) -> Client:
    try:
        client_id = uuid.UUID(client_part)
    except ValueError:
        raise Rejected(f"unknown client {client_part!r}: not a client id") from None
    row = conn.execute(
        "SELECT base_currency, mapping_profile FROM clients WHERE id = %s AND archived_at IS NULL",
        (client_id,),
    ).fetchone()
    if row is None:
        raise Rejected(f"unknown client {client_id}")
    try:
        profile = MappingProfile.from_json(row[1])
    except (TypeError, ValidationError) as exc:
        raise Rejected(f"the client's mapping profile is invalid: {exc}") from None
    return Client(client_id, row[0], profile)


def _import(
    conn: psycopg.Connection,
    client: Client,
    spool: BinaryIO,
    file_name: str,
    header: dict[str, Any],
    started: datetime,
    blob_name: str | None,
) -> ImportOutcome:
    # One import per client at a time, so that concurrent files dedupe against each other
    # in a fixed order and the counts in each report are exact.
    conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('ledger_import:' || %s, 0))",
        (str(client.id),),
    )
    # Dedupe sorts the whole file; let it sort in memory rather than spill to disk.
    conn.execute(f"SET LOCAL work_mem = '{IMPORT_WORK_MEM_MB}MB'")
    # Dedupe joins the file to the ledger on (account, key). A merge join may use the account
    # alone as its merge key when the file already comes sorted by account and the statistics
    # promise few rows per account; with every row in one account that compares each row of
    # the file with every row of the account (a re-import of a million rows ran for hours).
    # A hash join always uses both columns.
    conn.execute("SET LOCAL enable_mergejoin = off")

    try:
        parsed = parse_file(
            spool,
            name=file_name,
            default_currency=client.base_currency,
            profile=client.profile,
        )
    except UnsupportedFile as exc:
        raise Rejected(str(exc)) from None

    is_journal = parsed.format is FileFormat.JOURNAL_CSV
    if is_journal:
        tally = _stage_journal(conn, parsed.records)  # type: ignore[arg-type]
    else:
        # An ``account-<label>`` folder names the bank account for files that do not name
        # one themselves, so two accounts' exports never merge.
        folder = account_folder(file_name)
        try:
            _stage_bank(conn, parsed.records, parsed.errors, folder)  # type: ignore[arg-type]
        except UnsupportedFile as exc:
            # An OFX file shows some whole-file problems only once it has been read through.
            raise Rejected(str(exc)) from None
        parsed.balances = [
            replace(b, account_ref=b.account_ref or folder) for b in parsed.balances
        ]

    counted = parsed.details.get("error_count")
    # The parser counts its own errors; amounts refused here come on top.
    error_count = max(counted if isinstance(counted, int) else 0, len(parsed.errors))
    if parsed.errors:
        telemetry.record_import_rows(imported=0, duplicates=0, rejected=error_count)
        raise Rejected(
            f"{error_count} row(s) are invalid; nothing was imported",
            parsed.errors,
            error_count,
        )
    if not is_journal:
        tally = _bank_tally(conn)
    if tally.rows == 0:
        raise Rejected("the file has no transactions")
    if tally.rows >= LARGE_IMPORT_ROWS:
        conn.execute("SET LOCAL enable_nestloop = off")

    if not is_journal:
        _ensure_bank_accounts(conn, client)
    warnings = [] if is_journal else _fitid_warnings(conn)
    import_id = _insert_import_row(conn, client, header, blob_name, parsed.format, started)
    if is_journal:
        imported, duplicates = _post_journal(conn, client, import_id)
    else:
        imported, duplicates = _post_bank(conn, client, import_id)
        _record_balances(conn, client, import_id, parsed.balances)

    report: dict[str, Any] = {
        **header,
        "status": "imported",
        "import_id": import_id,
        "client_id": str(client.id),
        "format": parsed.format.value,
        "rows_read": tally.rows,
        "imported": imported,
        "duplicates_skipped": duplicates,
        "date_range": {
            "first": tally.first.isoformat() if tally.first else None,
            "last": tally.last.isoformat() if tally.last else None,
        },
        "totals": _render_totals(tally, is_journal),
        "balance_check": [] if is_journal else _balance_check(conn, client, parsed.balances),
        "warnings": warnings,
        "detected": _masked(_jsonable(parsed.details)),
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
    }
    location = f"{LEDGER_REPORTS_CONTAINER}/{blob_name}.json" if blob_name else None
    conn.execute(
        """
        UPDATE ledger_imports
           SET rows_read = %s, imported = %s, duplicates = %s,
               report = %s, report_location = %s, finished_at = now()
         WHERE id = %s
        """,
        (tally.rows, imported, duplicates, json.dumps(report), location, import_id),
    )
    audit.record(
        conn,
        actor="ledger-import",
        action="ledger.import.imported",
        client_id=client.id,
        subject=header["file"],
        details={
            "import_id": import_id,
            "sha256": header["sha256"],
            "rows_read": tally.rows,
            "imported": imported,
            "duplicates_skipped": duplicates,
        },
    )
    return ImportOutcome("imported", import_id, report, location)


def _log_imported(outcome: ImportOutcome, blob_name: str, check_s: float, commit_s: float) -> None:
    """Say that a file is in the ledger; called once its transaction has committed."""
    report = outcome.report
    log.info(
        "imported %s: %s rows, %s new, %s duplicates; ledger checks %.2f s, commit %.2f s",
        report["file"],
        report["rows_read"],
        report["imported"],
        report["duplicates_skipped"],
        check_s,
        commit_s,
        extra={
            "client_id": report["client_id"],
            "import_id": outcome.import_id,
            "blob": blob_name,
            "check_ms": round(check_s * 1000),
            "commit_ms": round(commit_s * 1000),
        },
    )
    telemetry.record_import_rows(
        imported=report["imported"], duplicates=report["duplicates_skipped"], rejected=0
    )


def _insert_import_row(
    conn: psycopg.Connection,
    client: Client,
    header: dict[str, Any],
    blob_name: str | None,
    file_format: FileFormat,
    started: datetime,
) -> int:
    row = conn.execute(
        """
        INSERT INTO ledger_imports
            (client_id, blob_name, blob_version, sha256, size_bytes, format, status, started_at)
        VALUES (%s, %s, %s, %s, %s, %s, 'imported', %s)
        RETURNING id
        """,
        (
            client.id,
            blob_name or f"dry-run/{uuid.uuid4()}",
            header.get("blob_version", "dry-run"),
            header["sha256"],
            header["size_bytes"],
            file_format.value,
            started,
        ),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _check_amount(txn: BankTxn, errors: list[RowError]) -> bool:
    if abs(txn.amount_minor) < MAX_ABS_AMOUNT_MINOR:
        return True
    if len(errors) < LEDGER_REPORT_MAX_ERRORS:
        shown = str(Money(txn.amount_minor, txn.currency).to_decimal())
        errors.append(RowError(txn.line, "amount", shown, "amount is too large to be real"))
    return False


def _stage_bank(
    conn: psycopg.Connection,
    records: Iterator[BankTxn],
    errors: list[RowError],
    default_account: str,
) -> None:
    """Stream the file's transactions into ``stage_bank`` (all of them while none is bad)."""
    conn.execute(
        """
        CREATE TEMP TABLE stage_bank (
            line integer, account_ref text, booked_on date, amount_minor bigint,
            currency text, description text, fitid text, reference text, key_text text
        ) ON COMMIT DROP
        """
    )
    batch: list[str] = []
    cursor = conn.cursor()
    with cursor.copy(
        "COPY stage_bank (line, account_ref, booked_on, amount_minor, currency, description,"
        " fitid, reference, key_text) FROM STDIN",
        writer=_bounded_writer(cursor),
    ) as copy:
        for txn in records:
            if not _check_amount(txn, errors) or errors:
                continue  # the file is rejected anyway; keep reading only to count rows
            text = txn.description
            folded = " ".join(text.split()).casefold()
            batch.append(
                f"{txn.line}\t{_copy_text(txn.account_ref or default_account)}"
                f"\t{txn.booked_on}\t{txn.amount_minor}\t{_copy_text(txn.currency)}"
                f"\t{_copy_text(text)}\t{_copy_text(txn.fitid or None)}"
                f"\t{_copy_text(txn.reference)}"
                # Null when SQL's ASCII lower() of the description gives the same text.
                f"\t{_copy_text(None if text.isascii() and folded == text.lower() else folded)}"
                "\n"
            )
            if len(batch) == COPY_BATCH_ROWS:
                copy.write("".join(batch))
                batch.clear()
        if batch:
            copy.write("".join(batch))


def _copy_text(value: str | None) -> str:
    """``value`` as a field of COPY's text format."""
    if value is None:
        return "\\N"
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(_COPY_ESCAPES)
    return value


def _bank_tally(conn: psycopg.Connection) -> _Tally:
    """Counts, date range and totals per currency of the staged transactions."""
    tally = _Tally()
    for currency, count, first, last, inflow, outflow in conn.execute(
        """
        SELECT currency, count(*), min(booked_on), max(booked_on),
               coalesce(sum(amount_minor) FILTER (WHERE amount_minor > 0), 0),
               coalesce(-sum(amount_minor) FILTER (WHERE amount_minor < 0), 0)
        FROM stage_bank GROUP BY currency
        """
    ):
        tally.rows += count
        tally.first = first if tally.first is None else min(tally.first, first)
        tally.last = last if tally.last is None else max(tally.last, last)
        tally.totals[currency] = {"count": count, "in": int(inflow), "out": int(outflow)}
    return tally


def _bounded_writer(cursor: psycopg.Cursor[Any]) -> LibpqWriter:
    """A COPY writer that waits for the server instead of queueing up to 32 MiB ahead of it,
    so an import's memory does not grow with the file."""
    return LibpqWriter(cursor)


# Limitation: this statement is most of a large import's time (about 28 s of database CPU
# for a million rows on a shared 2-core machine): four ledger rows and nine index entries
# per bank row, and two sorts of the file (one to number repeated rows, one to post in file
# order). Its WAL is about 13 records and 1.4 KB per row with no full-page images
# (pg_stat_wal), so wal_compression has nothing to compress; 2 GB of shared_buffers instead
# of 512 MB and wal_init_zero=off changed nothing measurable, and were left out.
def _post_bank(conn: psycopg.Connection, client: Client, import_id: int) -> tuple[int, int]:
    income_id = _system_account(conn, client, UNCATEGORISED_INCOME)
    expense_id = _system_account(conn, client, UNCATEGORISED_EXPENSE)

    row = conn.execute(
        """
        WITH based AS (
            SELECT s.line, s.booked_on, s.amount_minor, s.currency, s.description,
                   s.reference, s.fitid, b.account_id,
                   -- The bank's FITID with the date and amount it names: banks do reuse
                   -- FITIDs, and a reused one must never hide another payment. Without a
                   -- FITID, a hash of the normalised row (see ROW_KEY_SQL).
                   CASE WHEN s.fitid IS NOT NULL
                        THEN 'fitid:' || s.fitid || ':' || s.booked_on || ':' || s.amount_minor
                        ELSE 'row:' || {row_key}
                   END COLLATE "C" AS base
            FROM stage_bank s JOIN stage_accounts b USING (account_ref)
        ),
        keyed AS (
            -- Repeats of one base inside the file are numbered in file order; a FITID's
            -- first occurrence keeps the bare key.
            SELECT k.*,
                   CASE WHEN k.fitid IS NOT NULL AND k.occurrence = 1 THEN k.base
                        ELSE k.base || ':' || k.occurrence
                   END AS dedupe_key
            FROM (SELECT based.*,
                         row_number() OVER (PARTITION BY account_id, base ORDER BY line)
                             AS occurrence
                  FROM based) k
        ),
        new_tx AS (
            INSERT INTO bank_transactions
                (client_id, account_id, booked_on, amount_minor, currency, description,
                 reference, fitid, dedupe_key, import_id, entry_id)
            SELECT %(client)s, k.account_id, k.booked_on, k.amount_minor, k.currency,
                   k.description, k.reference, k.fitid, k.dedupe_key, %(import)s,
                   CASE WHEN k.amount_minor <> 0
                        THEN nextval('journal_entries_id_seq') END
            FROM keyed k
            -- A plain insert of the rows not yet there costs less than ON CONFLICT's
            -- speculative insertion. Safe: this client's imports hold the advisory lock
            -- above, so nothing else inserts into its accounts meanwhile, and the unique
            -- index still stands behind it.
            WHERE NOT EXISTS (
                SELECT 1 FROM bank_transactions b
                WHERE b.account_id = k.account_id AND b.dedupe_key = k.dedupe_key)
            ORDER BY k.line
            RETURNING entry_id, account_id, booked_on, amount_minor, currency, description
        ),
        entries AS (
            INSERT INTO journal_entries (id, client_id, booked_on, memo, source, import_id)
            SELECT n.entry_id, %(client)s, n.booked_on, n.description, 'bank_import', %(import)s
            FROM new_tx n WHERE n.entry_id IS NOT NULL
        ),
        lines AS (
            -- Both lines of an entry one after the other: the key index (entry_id, id) then
            -- only ever grows at its end, instead of being walked a second time to put each
            -- counterpart line beside its bank line.
            INSERT INTO journal_lines (entry_id, client_id, account_id, amount_minor, currency)
            SELECT n.entry_id, %(client)s, side.account_id, side.amount_minor, n.currency
            FROM new_tx n
            CROSS JOIN LATERAL (VALUES
                (n.account_id, n.amount_minor),
                (CASE WHEN n.amount_minor > 0 THEN %(income)s ELSE %(expense)s END,
                 -n.amount_minor)
            ) AS side (account_id, amount_minor)
            WHERE n.entry_id IS NOT NULL
        )
        SELECT (SELECT count(*) FROM new_tx), (SELECT count(*) FROM stage_bank)
        """.replace("{row_key}", ROW_KEY_SQL),
        {"client": client.id, "import": import_id, "income": income_id, "expense": expense_id},
    ).fetchone()
    assert row is not None
    imported, staged = int(row[0]), int(row[1])
    return imported, staged - imported


def _fitid_warnings(conn: psycopg.Connection) -> list[str]:
    """Name each FITID that stands for different transactions, in the file or the ledger.

    Every such transaction is imported (a reused FITID never hides a payment), so a bank
    that amended a transaction under its old FITID shows here for a person to check.
    """
    in_file = conn.execute(
        """
        SELECT fitid, count(DISTINCT (booked_on, amount_minor)), min(line) FROM stage_bank
        WHERE fitid IS NOT NULL GROUP BY account_ref, fitid
        HAVING count(DISTINCT (booked_on, amount_minor)) > 1 ORDER BY 3 LIMIT %s
        """,
        (LEDGER_REPORT_MAX_ERRORS,),
    ).fetchall()
    in_ledger = conn.execute(
        """
        SELECT DISTINCT ON (s.line) s.fitid, s.line, t.booked_on, t.amount_minor, t.currency
        FROM stage_bank s
        JOIN stage_accounts a USING (account_ref)
        JOIN bank_transactions t ON t.account_id = a.account_id AND t.fitid = s.fitid
        WHERE s.fitid IS NOT NULL
          AND (t.booked_on, t.amount_minor) <> (s.booked_on, s.amount_minor)
        ORDER BY s.line LIMIT %s
        """,
        (LEDGER_REPORT_MAX_ERRORS,),
    ).fetchall()
    return [
        f"FITID {fitid!r} names {count} different transactions in this file (first on line "
        f"{line}); each was imported"
        for fitid, count, line in in_file
    ] + [
        f"FITID {fitid!r} on line {line} was booked before as {booked_on} "
        f"{Money(amount, currency)}; this file gives another date or amount, so it was "
        "imported as a separate transaction: check whether the bank amended it"
        for fitid, line, booked_on, amount, currency in in_ledger
    ]


def _ensure_bank_accounts(conn: psycopg.Connection, client: Client) -> None:
    """Create a bank account in the chart for each account the file names, once, and list
    them in ``stage_accounts`` (account_ref, account_id) for the statements that follow."""
    conn.execute(
        "CREATE TEMP TABLE stage_accounts (account_ref text PRIMARY KEY, account_id bigint)"
        " ON COMMIT DROP"
    )
    refs = [r[0] for r in conn.execute("SELECT DISTINCT account_ref FROM stage_bank")]
    for ref in refs:
        key = _bank_account_key(ref)
        shown = f" {_account_label(ref)}" if ref else ""
        conn.execute(
            """
            INSERT INTO accounts (client_id, code, name, type, external_ref)
            VALUES (%(client)s, %(code)s, %(name)s, 'asset', %(key)s)
            ON CONFLICT (client_id, external_ref) DO NOTHING
            """,
            {
                "client": client.id,
                "code": f"BANK-{key[5:13].upper()}",
                "name": f"Bank account{shown}",
                "key": key,
            },
        )
        conn.execute(
            """
            INSERT INTO stage_accounts (account_ref, account_id)
            SELECT %s, id FROM accounts WHERE client_id = %s AND external_ref = %s
            """,
            (ref, client.id, key),
        )


def _bank_account_key(ref: str) -> str:
    """The ``external_ref`` of the bank account for ``ref``: a hash of the bank's account
    id, never the number itself."""
    return "bank:" + hashlib.sha256(ref.encode()).hexdigest()


def _account_label(ref: str) -> str:
    """A name for an account reference: numbers masked to their last four, labels as is."""
    if sum(ch.isdigit() for ch in ref) >= 4:
        return f"…{ref[-4:]}"
    return ref


def _system_account(conn: psycopg.Connection, client: Client, spec: tuple[str, str, str]) -> int:
    code, name, kind = spec
    conn.execute(
        """
        INSERT INTO accounts (client_id, code, name, type, external_ref)
        VALUES (%s, %s, %s, %s, %s)
        ON CONFLICT (client_id, external_ref) DO NOTHING
        """,
        (client.id, code, name, kind, f"system:{code.lower()}"),
    )
    row = conn.execute(
        "SELECT id FROM accounts WHERE client_id = %s AND external_ref = %s",
        (client.id, f"system:{code.lower()}"),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _stage_journal(conn: psycopg.Connection, records: Iterator[JournalLine]) -> _Tally:
    conn.execute(
        """
        CREATE TEMP TABLE stage_journal (
            line integer, entry_ref text, booked_on date, account text,
            debit_minor bigint, credit_minor bigint, currency text, memo text
        ) ON COMMIT DROP
        """
    )
    tally = _Tally()
    cursor = conn.cursor()
    with cursor.copy(
        "COPY stage_journal (line, entry_ref, booked_on, account, debit_minor, credit_minor,"
        " currency, memo) FROM STDIN",
        writer=_bounded_writer(cursor),
    ) as copy:
        for jl in records:
            tally.add(jl.booked_on, jl.currency, jl.debit_minor, jl.credit_minor)
            copy.write_row(
                (
                    jl.line,
                    jl.entry_ref,
                    jl.booked_on,
                    jl.account,
                    jl.debit_minor,
                    jl.credit_minor,
                    jl.currency,
                    jl.memo,
                )
            )
    return tally


def _post_journal(conn: psycopg.Connection, client: Client, import_id: int) -> tuple[int, int]:
    errors = _journal_errors(conn, client)
    if errors:
        raise Rejected(
            f"{len(errors)} problem(s) in journal entries; nothing was imported", errors
        )

    row = conn.execute(
        """
        WITH resolved AS (
            SELECT s.*, coalesce(
                (SELECT a.id FROM accounts a
                  WHERE a.client_id = %(client)s AND a.code = s.account),
                (SELECT min(a.id) FROM accounts a
                  WHERE a.client_id = %(client)s AND lower(a.name) = lower(s.account))
            ) AS account_id
            FROM stage_journal s
        ),
        grouped AS (
            SELECT entry_ref, min(booked_on) AS booked_on, min(line) AS first_line,
                   string_agg(nullif(memo, ''), ' / ' ORDER BY line) AS memo,
                   -- The file's own entry reference is part of the key: two entries with
                   -- the same lines in one file are two entries, not a repeat.
                   'journal:' || encode(sha256(convert_to(entry_ref || ';' || string_agg(
                       concat_ws('|', booked_on, account_id, debit_minor, credit_minor, currency),
                       ';' ORDER BY line), 'UTF8')), 'hex') AS dedupe_key
            FROM resolved GROUP BY entry_ref
        ),
        new_entries AS (
            INSERT INTO journal_entries
                (client_id, booked_on, reference, memo, source, import_id, dedupe_key)
            SELECT %(client)s, g.booked_on, g.entry_ref, coalesce(g.memo, ''),
                   'journal_import', %(import)s, g.dedupe_key
            FROM grouped g ORDER BY g.first_line
            ON CONFLICT (client_id, dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING
            RETURNING id, reference
        ),
        lines AS (
            INSERT INTO journal_lines
                (entry_id, client_id, account_id, amount_minor, currency, memo)
            SELECT e.id, %(client)s, r.account_id, r.debit_minor - r.credit_minor,
                   r.currency, r.memo
            FROM new_entries e JOIN resolved r ON r.entry_ref = e.reference
            ORDER BY r.line
        )
        SELECT (SELECT count(*) FROM new_entries), (SELECT count(*) FROM grouped)
        """,
        {"client": client.id, "import": import_id},
    ).fetchone()
    assert row is not None
    imported, entries = int(row[0]), int(row[1])
    return imported, entries - imported


def _journal_errors(conn: psycopg.Connection, client: Client) -> list[RowError]:
    """Unknown accounts, entries spanning several dates and unbalanced entries."""
    errors: list[RowError] = []
    for line, account in conn.execute(
        """
        SELECT s.line, s.account FROM stage_journal s
        WHERE NOT EXISTS (SELECT 1 FROM accounts a
                          WHERE a.client_id = %s
                            AND (a.code = s.account OR lower(a.name) = lower(s.account)))
        ORDER BY s.line LIMIT %s
        """,
        (client.id, LEDGER_REPORT_MAX_ERRORS),
    ):
        errors.append(
            RowError(line, "account", account, "unknown account: not in the client's chart")
        )
    for entry_ref, line in conn.execute(
        """
        SELECT entry_ref, min(line) FROM stage_journal
        GROUP BY entry_ref HAVING count(DISTINCT booked_on) > 1
        ORDER BY 2 LIMIT %s
        """,
        (LEDGER_REPORT_MAX_ERRORS,),
    ):
        errors.append(RowError(line, "date", entry_ref, "lines of one entry have different dates"))
    for entry_ref, line, currency, debits, credits in conn.execute(
        """
        SELECT entry_ref, min(line), currency, sum(debit_minor), sum(credit_minor)
        FROM stage_journal GROUP BY entry_ref, currency
        HAVING sum(debit_minor) <> sum(credit_minor)
        ORDER BY 2 LIMIT %s
        """,
        (LEDGER_REPORT_MAX_ERRORS,),
    ):
        errors.append(
            RowError(
                line,
                "entry",
                entry_ref,
                f"entry does not balance in {currency}: debits {Money(int(debits), currency)}, "
                f"credits {Money(int(credits), currency)}",
            )
        )
    return errors[:LEDGER_REPORT_MAX_ERRORS]


def _record_balances(
    conn: psycopg.Connection, client: Client, import_id: int, balances: list[Any]
) -> None:
    """Keep each dated balance the file states, for the month-end reconciliation.

    A balance without a date (a CSV that states none) cannot be placed in a period and is
    only checked in the report; the first of two a file states for one day is kept.
    """
    for stated in balances:
        if stated.as_of is None:
            continue
        conn.execute(
            "INSERT INTO bank_statement_balances (client_id, account_id, import_id, currency,"
            " amount_minor, as_of)"
            " SELECT %s, a.id, %s, %s, %s, %s FROM accounts a"
            " WHERE a.client_id = %s AND a.external_ref = %s"
            " ON CONFLICT (import_id, account_id, currency, as_of) DO NOTHING",
            (
                client.id,
                import_id,
                stated.currency,
                stated.amount_minor,
                stated.as_of,
                client.id,
                _bank_account_key(stated.account_ref),
            ),
        )


def _balance_check(
    conn: psycopg.Connection, client: Client, balances: list[Any]
) -> list[dict[str, Any]]:
    """Compare each balance the file states with the account's ledger balance after import."""
    checks = []
    for stated in balances:
        row = conn.execute(
            """
            SELECT coalesce(sum(l.amount_minor), 0)
            FROM journal_lines l
            JOIN accounts a ON a.id = l.account_id
            JOIN journal_entries e ON e.id = l.entry_id
            WHERE a.client_id = %s AND a.external_ref = %s AND l.currency = %s
              AND (%s::date IS NULL OR e.booked_on <= %s::date)
            """,
            (
                client.id,
                _bank_account_key(stated.account_ref),
                stated.currency,
                stated.as_of,
                stated.as_of,
            ),
        ).fetchone()
        ledger = int(row[0]) if row else 0
        checks.append(
            {
                "account": _account_label(stated.account_ref),
                "currency": stated.currency,
                "as_of": stated.as_of.isoformat() if stated.as_of else None,
                "stated": str(Money(stated.amount_minor, stated.currency).to_decimal()),
                "ledger": str(Money(ledger, stated.currency).to_decimal()),
                "matches": ledger == stated.amount_minor,
            }
        )
    return checks


def _render_totals(tally: _Tally, is_journal: bool) -> dict[str, dict[str, Any]]:
    rendered: dict[str, dict[str, Any]] = {}
    for currency, bucket in sorted(tally.totals.items()):
        if is_journal:
            rendered[currency] = {
                "lines": bucket["count"],
                "debits": str(Money(bucket["in"], currency).to_decimal()),
                "credits": str(Money(bucket["out"], currency).to_decimal()),
            }
        else:
            rendered[currency] = {
                "transactions": bucket["count"],
                "inflow": str(Money(bucket["in"], currency).to_decimal()),
                "outflow": str(Money(bucket["out"], currency).to_decimal()),
                "net": str(Money(bucket["in"] - bucket["out"], currency).to_decimal()),
            }
    return rendered


def _masked(value: Any) -> Any:
    """Copy ``value`` with every ``account_ref`` masked, as account names are."""
    if isinstance(value, dict):
        return {
            k: _account_label(v) if k == "account_ref" and isinstance(v, str) else _masked(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _rejection_report(
    header: dict[str, Any], started: datetime, rejected: Rejected
) -> dict[str, Any]:
    return {
        **header,
        "status": "rejected",
        "reason": rejected.reason,
        "error_count": rejected.error_count,
        "errors": [e.to_json() for e in rejected.errors],
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
    }


def _reject(
    blob_name: str,
    header: dict[str, Any],
    started: datetime,
    rejected: Rejected,
    spool: BinaryIO,
) -> ImportOutcome:
    """Move the file to quarantine with its report and record the rejection."""
    report = _rejection_report(header, started, rejected)
    client_id = _known_client_id(blob_name)
    location = f"{LEDGER_REPORTS_CONTAINER}/{blob_name}.json"

    spool.seek(0)
    blob.upload(
        LEDGER_QUARANTINE_CONTAINER, blob_name, spool, content_type="application/octet-stream"
    )
    with postgres.transaction() as conn:
        row = conn.execute(
            """
            INSERT INTO ledger_imports
                (client_id, blob_name, blob_version, sha256, size_bytes, status, reason,
                 error_count, report, report_location, started_at)
            VALUES (%s, %s, %s, %s, %s, 'rejected', %s, %s, %s, %s, %s)
            ON CONFLICT (blob_name, blob_version) DO UPDATE SET finished_at = now()
            RETURNING id
            """,
            (
                client_id,
                blob_name,
                header["blob_version"],
                header["sha256"],
                header["size_bytes"],
                rejected.reason,
                rejected.error_count,
                json.dumps(report),
                location,
                started,
            ),
        ).fetchone()
        assert row is not None
        import_id = int(row[0])
        report["import_id"] = import_id
        conn.execute(
            "UPDATE ledger_imports SET report = %s WHERE id = %s", (json.dumps(report), import_id)
        )
        audit.record(
            conn,
            actor="ledger-import",
            action="ledger.import.rejected",
            client_id=client_id,
            subject=header["file"],
            details={
                "import_id": import_id,
                "sha256": header["sha256"],
                "reason": rejected.reason,
            },
        )
    log.warning(
        "rejected %s: %s",
        header["file"],
        rejected.reason,
        extra={"client_id": str(client_id) if client_id else None, "import_id": import_id},
    )
    return ImportOutcome("rejected", import_id, report, location)


def _known_client_id(blob_name: str) -> uuid.UUID | None:
    """The client of a rejected file, when its folder names one that exists."""
    client_part = blob_name.partition("/")[0]
    try:
        client_id = uuid.UUID(client_part)
    except ValueError:
        return None
    with postgres.transaction() as conn:
        row = conn.execute("SELECT 1 FROM clients WHERE id = %s", (client_id,)).fetchone()
    return client_id if row else None


def _find_import(blob_name: str, etag: str) -> ImportOutcome | None:
    """The stored outcome of a blob version already handled, if any."""
    with postgres.transaction() as conn:
        row = conn.execute(
            "SELECT id, status, report, report_location FROM ledger_imports"
            " WHERE blob_name = %s AND blob_version = %s",
            (blob_name, etag),
        ).fetchone()
    return ImportOutcome(row[1], int(row[0]), row[2], row[3]) if row else None


def _publish(outcome: ImportOutcome) -> None:
    """Write the report blob and, for a rejection, remove the file from the drop folder."""
    if not outcome.report_location:
        return
    container, _, name = outcome.report_location.partition("/")
    body = json.dumps(outcome.report, indent=2, sort_keys=True).encode()
    blob.upload(container, name, body, content_type="application/json")
    if outcome.status == "rejected":
        blob.upload(
            LEDGER_QUARANTINE_CONTAINER,
            name.removesuffix(".json") + ".report.json",
            body,
            content_type="application/json",
        )
        blob.delete(LEDGER_IMPORTS_CONTAINER, name.removesuffix(".json"))


def list_imports(client_id: uuid.UUID, limit: int = 100) -> list[dict[str, Any]]:
    """Return a client's imports, newest first, without their full reports.

    Raises:
        NotFound: no such client (a mistyped id is not an empty list).
    """
    with postgres.transaction() as conn:
        if conn.execute("SELECT 1 FROM clients WHERE id = %s", (client_id,)).fetchone() is None:
            raise NotFound(f"client {client_id} not found")
        rows = conn.execute(
            """
            SELECT id, blob_name, blob_version, sha256, size_bytes, format, status, reason,
                   rows_read, imported, duplicates, error_count, report_location, finished_at
            FROM ledger_imports WHERE client_id = %s ORDER BY id DESC LIMIT %s
            """,
            (client_id, limit),
        ).fetchall()
    keys = (
        "id",
        "blob_name",
        "blob_version",
        "sha256",
        "size_bytes",
        "format",
        "status",
        "reason",
        "rows_read",
        "imported",
        "duplicates_skipped",
        "error_count",
        "report_location",
        "finished_at",
    )
    return [_jsonable(dict(zip(keys, row, strict=True))) for row in rows]


def get_report(client_id: uuid.UUID, import_id: int) -> dict[str, Any]:
    """Return one import's report.

    Raises:
        NotFound: no such import for this client (another client's id looks the same).
    """
    with postgres.transaction() as conn:
        row = conn.execute(
            "SELECT report FROM ledger_imports WHERE id = %s AND client_id = %s",
            (import_id, client_id),
        ).fetchone()
    if row is None:
        raise NotFound(f"import {import_id} not found")
    report: dict[str, Any] = row[0]
    return report
