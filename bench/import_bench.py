"""Ledger import benchmark: our full import path against Postgres COPY (the ceiling) and
hledger (a peer), side by side in one run, as rates and ratios rather than absolute times.

    python -m bench.import_bench [--rows 1000000] [--small-rows 100000] [--ofx-rows 200000]
        [--ofx-small-rows 50000] [--ofx-only]

``--ofx-rows 0`` leaves the OFX imports out (a quicker CSV-only run while iterating).

Each import runs in a child process so that its peak RSS and CPU time are its own.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

# Targets from the import requirements, printed beside each ratio.
TARGET_COPY_SHARE = 0.25
TARGET_HLEDGER_MULTIPLE = 10.0
TARGET_PEAK_RSS_MB = 250.0

PAYEES = (
    "ACME OFFICE SUPPLIES",
    "CITY WATER UTILITY",
    "PAYROLL RUN",
    "CLIENT PAYMENT",
    "COFFEE HOUSE",
    "AWS EMEA",
    "STRIPE PAYOUT",
    "RENT - 12 HIGH ST",
    "INSURANCE PREMIUM",
    "CARD FEE",
    "TRANSFER TO SAVINGS",
    "TAX AUTHORITY",
)


def write_csv(path: Path, rows: int, seed: int = 7) -> None:
    """A plain bank export: ISO date, description, signed amount with two decimals."""
    rng = random.Random(seed)
    start = date(2020, 1, 1)
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("Date,Description,Amount\n")
        for n in range(rows):
            day = start + timedelta(days=n * 2000 // rows)
            cents = rng.randint(-250_000, 250_000) or 1
            sign = "-" if cents < 0 else ""
            out.write(
                f"{day.isoformat()},{rng.choice(PAYEES)} {n:07d},"
                f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}\n"
            )


def write_ofx(path: Path, rows: int, seed: int = 11) -> None:
    """An OFX 1.02 SGML bank statement with ``rows`` transactions and unclosed leaf tags."""
    rng = random.Random(seed)
    start = date(2020, 1, 1)
    with path.open("w", encoding="ascii", newline="\r\n") as out:
        out.write(
            "OFXHEADER:100\nDATA:OFXSGML\nVERSION:102\nSECURITY:NONE\nENCODING:USASCII\n"
            "CHARSET:1252\nCOMPRESSION:NONE\nOLDFILEUID:NONE\nNEWFILEUID:NONE\n\n"
            "<OFX><SIGNONMSGSRSV1><SONRS><STATUS><CODE>0<SEVERITY>INFO</STATUS>"
            "<DTSERVER>20260101120000[-5:EST]<LANGUAGE>ENG</SONRS></SIGNONMSGSRSV1>\n"
            "<BANKMSGSRSV1><STMTTRNRS><TRNUID>1<STATUS><CODE>0<SEVERITY>INFO</STATUS>\n"
            "<STMTRS><CURDEF>USD<BANKACCTFROM><BANKID>121000248<ACCTID>1234567890"
            "<ACCTTYPE>CHECKING</BANKACCTFROM>\n<BANKTRANLIST><DTSTART>20200101<DTEND>20260101\n"
        )
        total = 0
        for n in range(rows):
            day = start + timedelta(days=n * 2000 // rows)
            cents = rng.randint(-250_000, 250_000) or 1
            total += cents
            sign = "-" if cents < 0 else ""
            kind = "DEBIT" if cents < 0 else "CREDIT"
            out.write(
                f"<STMTTRN><TRNTYPE>{kind}<DTPOSTED>{day:%Y%m%d}120000[-5:EST]"
                f"<TRNAMT>{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}"
                f"<FITID>F{n:09d}<NAME>{rng.choice(PAYEES)}</STMTTRN>\n"
            )
        sign = "-" if total < 0 else ""
        out.write(
            "</BANKTRANLIST><LEDGERBAL><BALAMT>"
            f"{sign}{abs(total) // 100}.{abs(total) % 100:02d}<DTASOF>20260101</LEDGERBAL>"
            "</STMTRS></STMTTRNRS></BANKMSGSRSV1></OFX>\n"
        )


def run_child(args: list[str], env: dict[str, str]) -> tuple[dict[str, Any], float]:
    """Run ``python -m bench.import_bench child ...``; return its JSON and its peak RSS in MB.

    The peak is the child's own high-water mark. ``ru_maxrss`` from ``wait4`` is not: Linux
    carries the parent's peak at fork across ``exec``, so it would show this process (which
    has just uploaded the file) rather than the import.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.import_bench", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"child {args} failed with exit code {proc.returncode}")
    result: dict[str, Any] = json.loads(output)
    own_peak = result.pop("peak_rss_kb", None)
    return result, (usage.ru_maxrss if own_peak is None else own_peak) / 1024


def own_peak_rss_kb() -> int | None:
    """This process's peak resident set in kB (``VmHWM``), None where /proc has no such line."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def child_import(blob_name: str) -> None:
    """In a child process: import one blob and print what happened and how long it took."""
    from shared.services import ledger_import

    started, cpu_started = time.perf_counter(), time.process_time()
    outcome = ledger_import.import_blob(blob_name)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    report = outcome.report
    print(
        json.dumps(
            {
                "status": outcome.status,
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "rows": report.get("rows_read"),
                "imported": report.get("imported"),
                "duplicates": report.get("duplicates_skipped"),
                "reason": report.get("reason"),
                "peak_rss_kb": own_peak_rss_kb(),
            }
        )
    )


def copy_ceiling(database_url: str, csv_path: Path, client_id: uuid.UUID) -> float:
    """Time COPY of the same rows, already in table form, into bank_transactions."""
    import hashlib

    import psycopg

    with psycopg.connect(database_url) as conn:
        account = conn.execute(
            "INSERT INTO accounts (client_id, code, name, type)"
            " VALUES (%s, 'COPY', 'Copy', 'asset') RETURNING id",
            (client_id,),
        ).fetchone()
        imp = conn.execute(
            "INSERT INTO ledger_imports (client_id, blob_name, blob_version, sha256, size_bytes,"
            " status, started_at) VALUES (%s, 'copy-ceiling', 'v', repeat('0', 64), 0,"
            " 'imported', now()) RETURNING id",
            (client_id,),
        ).fetchone()
        conn.commit()
        assert account and imp

        # Prepare the COPY text outside the timed part: the ceiling is Postgres alone.
        table_rows = csv_path.with_suffix(".copy.tsv")
        with csv_path.open(encoding="utf-8") as src, table_rows.open("w") as out:
            next(src)
            for n, line in enumerate(src):
                day, description, amount = line.rstrip("\n").rsplit(",", 2)
                minor = int(amount.replace(".", ""))
                key = hashlib.sha256(line.encode()).hexdigest()
                out.write(
                    f"{client_id}\t{account[0]}\t{day}\t{minor}\tUSD\t{description}\t"
                    f"row:{key}:{n}\t{imp[0]}\n"
                )
        started = time.perf_counter()
        with (
            conn.cursor().copy(
                "COPY bank_transactions (client_id, account_id, booked_on, amount_minor,"
                " currency, description, dedupe_key, import_id) FROM STDIN"
            ) as copy,
            table_rows.open("rb") as data,
        ):
            while chunk := data.read(1 << 20):
                copy.write(chunk)
        conn.commit()
        seconds = time.perf_counter() - started
        table_rows.unlink()
    return seconds


def hledger_peer(csv_path: Path, workdir: Path) -> tuple[float, float] | None:
    """Time hledger reading the CSV with a rules file; None when hledger is not installed."""
    exe = shutil.which("hledger")
    if exe is None:
        return None
    rules = workdir / "bank.rules"
    rules.write_text(
        "skip 1\nfields date, description, amount\ndate-format %Y-%m-%d\ncurrency $\n"
        "account1 assets:bank\naccount2 expenses:uncategorised\n"
    )
    started = time.perf_counter()
    proc = subprocess.Popen(
        [exe, "-f", str(csv_path), "--rules-file", str(rules), "print"],
        stdout=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("hledger failed on the benchmark CSV")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "child":
        child_import(sys.argv[2])
        return

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--small-rows", type=int, default=100_000)
    parser.add_argument("--ofx-rows", type=int, default=200_000)
    parser.add_argument("--ofx-small-rows", type=int, default=50_000)
    parser.add_argument(
        "--ofx-only", action="store_true", help="only the two OFX imports (no CSV, COPY, hledger)"
    )
    options = parser.parse_args()

    from devhost import services as local

    work = Path(tempfile.mkdtemp(prefix="advisoros-bench-"))
    try:
        with (
            local.start_postgres(work / "pg", port=local.free_port()) as pg,
            local.start_azurite(
                work / "azurite", blob_port=local.free_port(), queue_port=local.free_port()
            ) as az,
        ):
            local.apply_migrations(pg.url, REPO / "migrations")
            env = {
                **os.environ,
                "DATABASE_URL": pg.url,
                "AzureWebJobsStorage": az.connection_string,
            }
            os.environ.update(env)
            run(options, work, env, pg.url)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(options: argparse.Namespace, work: Path, env: dict[str, str], database_url: str) -> None:
    from shared.adapters import blob
    from shared.services import clients

    firm = clients.create_firm("Benchmark firm")
    client = clients.create_client(firm, "Benchmark client")
    copy_client = clients.create_client(firm, "COPY ceiling client")

    files = {
        "small": (work / "small.csv", options.small_rows, write_csv),
        "large": (work / "large.csv", options.rows, write_csv),
        "ofx": (work / "large.ofx", options.ofx_rows, write_ofx),
        "small-ofx": (work / "small.ofx", options.ofx_small_rows, write_ofx),
    }
    # A seed per file, so that no row of one file repeats a row of another.
    for seed, (key, (path, rows, writer)) in enumerate(files.items()):
        if rows and (key.endswith("ofx") or not options.ofx_only):
            writer(path, rows, seed)

    # "cpu s" is the importing process's own CPU time (parsing, staging, posting requests),
    # less disturbed by other load on the machine than wall time; Postgres's work is not in it.
    print(
        f"{'case':<38} {'rows':>10} {'new':>10} {'seconds':>8} {'rows/s':>10} {'peak MB':>8}"
        f" {'cpu s':>7}"
    )

    def imported(label: str, path: Path, name: str) -> dict[str, Any]:
        with path.open("rb") as data:
            blob.upload("ledger-imports", f"{client}/{name}", data, content_type="text/plain")
        result, rss = run_child(["child", f"{client}/{name}"], env)
        if result["status"] != "imported":
            raise SystemExit(f"{label}: {result}")
        result["rss_mb"] = rss
        result["label"] = label
        print(
            f"{label:<38} {result['rows']:>10,} {result['imported']:>10,}"
            f" {result['seconds']:>8.2f} {result['rows'] / result['seconds']:>10,.0f}"
            f" {rss:>8.0f} {result['cpu_seconds']:>7.2f}",
            flush=True,
        )
        return result

    def ofx_imports() -> str:
        """The same OFX layout at two sizes: its peak RSS should not grow with the file."""
        small = imported(
            f"import OFX {options.ofx_small_rows:,} transactions",
            files["small-ofx"][0],
            "small.ofx",
        )
        large = imported(
            f"import OFX {options.ofx_rows:,} transactions", files["ofx"][0], "large.ofx"
        )
        return (
            f"peak RSS OFX small / large    {small['rss_mb']:.0f} MB / {large['rss_mb']:.0f} MB"
            f"   (target < {TARGET_PEAK_RSS_MB:.0f} MB, flat)"
        )

    if options.ofx_only:
        print(f"\n{ofx_imports()}")
        return
    results = [
        imported(f"import CSV {options.small_rows:,} rows", files["small"][0], "small.csv"),
        imported(f"import CSV {options.rows:,} rows", files["large"][0], "large.csv"),
        imported("re-import the same large CSV", files["large"][0], "large-again.csv"),
    ]
    ofx_peaks = ofx_imports() if options.ofx_rows else ""
    copy_seconds = copy_ceiling(database_url, files["large"][0], copy_client)
    peer = hledger_peer(files["small"][0], work)

    print(
        f"{'Postgres COPY, same rows (ceiling)':<38} {options.rows:>10,} {options.rows:>10,}"
        f" {copy_seconds:>8.2f} {options.rows / copy_seconds:>10,.0f} {'':>8}"
    )
    if peer:
        print(
            f"{'hledger print, small CSV (peer)':<38} {options.small_rows:>10,} {'':>10}"
            f" {peer[0]:>8.2f} {options.small_rows / peer[0]:>10,.0f} {peer[1]:>8.0f}"
        )

    small, large, again = results
    ours = large["rows"] / large["seconds"]
    print()
    share = ours / (options.rows / copy_seconds)
    print(f"import rate / COPY rate       {share:6.2f}   (target >= {TARGET_COPY_SHARE})")
    if peer:
        multiple = ours / (options.small_rows / peer[0])
        target = TARGET_HLEDGER_MULTIPLE
        print(f"import rate / hledger rate    {multiple:6.1f}   (target >= {target})")
    else:
        print("import rate / hledger rate       n/a   (hledger not installed)")
    print(
        f"peak RSS small / large        {small['rss_mb']:.0f} MB / {large['rss_mb']:.0f} MB"
        f"   (target < {TARGET_PEAK_RSS_MB:.0f} MB, flat)"
    )
    if ofx_peaks:
        print(ofx_peaks)
    print(
        f"re-import: new rows {again['imported']}, time / first import "
        f"{again['seconds'] / large['seconds']:.2f}   (target 0 rows, <= 1.0)"
    )


if __name__ == "__main__":
    main()
