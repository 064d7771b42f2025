"""Expected outcome of parsing every bank-csv, ofx and journal-csv file of the shared corpus.

One table, worked out by reading the files by hand. ``test_corpus`` checks the parser against
it; end-to-end tests import ``EXPECTED`` to check what lands in the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from shared.domain.imports import FileFormat, StatementBalance

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO.parent / "shared" / "corpus"
CORPUS_FOLDERS = ("bank-csv", "ofx", "journal-csv")

NOT_RECOGNISED = "not a bank CSV, OFX/QFX or journal CSV file"
NO_STATEMENT = "OFX file contains no bank or card statement"
ONLY_CASH = "investment statement: only its cash lines can be imported"
TRANSFERS_ONLY = (
    f"{NO_STATEMENT} (intrabank transfer responses only; a transfer response confirms a "
    "transfer order, it is no account statement)"
)


def _trades(account: str, count: int, kinds: str) -> str:
    return (
        f"{ONLY_CASH}, but account {account} also has {count} security transaction(s) "
        f"({kinds}); importing the cash lines alone would leave its cash incomplete"
    )


@dataclass(frozen=True)
class Expected:
    """What parsing one corpus file must give.

    Attributes:
        format: the detected format; ``None`` when the file is rejected.
        rejection: the exact ``UnsupportedFile`` message when the file is rejected.
        records: number of records yielded (bank transactions or journal lines).
        totals: currency -> sum of ``amount_minor`` (bank formats).
        debits: currency -> sum of ``debit_minor`` (journals).
        credits: currency -> sum of ``credit_minor`` (journals).
        earliest: the earliest booking date among the records.
        latest: the latest booking date among the records.
        row_errors: number of row errors.
        balances: the statement balances the file states, in file order.
        default_currency: the ``default_currency`` to parse with (the client's currency);
            USD unless the file's bank is clearly elsewhere and the file does not say.
    """

    format: FileFormat | None = None
    rejection: str | None = None
    records: int = 0
    totals: dict[str, int] = field(default_factory=dict)
    debits: dict[str, int] = field(default_factory=dict)
    credits: dict[str, int] = field(default_factory=dict)
    earliest: date | None = None
    latest: date | None = None
    row_errors: int = 0
    balances: tuple[StatementBalance, ...] = ()
    default_currency: str = "USD"


BANK = FileFormat.BANK_CSV
JOURNAL = FileFormat.JOURNAL_CSV
SGML, XML, QFX = FileFormat.OFX_SGML, FileFormat.OFX_XML, FileFormat.QFX


def _day(text: str) -> date:
    return date.fromisoformat(text)


EXPECTED: dict[str, Expected] = {
    # --- bank-csv -------------------------------------------------------------------------
    # Judgement: rejected. An order history is not a cash statement: each order was paid by
    # card and shows on that card's statement, so importing it would count spending twice.
    # Its header has no amount column, which is the reason given.
    "bank-csv/csv2ofx__amazon.csv": Expected(
        rejection=(
            f"{NOT_RECOGNISED}: the header on line 1 (order id, order url, items, to, date, "
            "total, shipping, shipping_refund, gift, tax, refund, payments) has no column for "
            "the amount (or debit and credit); map it in the client's mapping profile"
        )
    ),
    # The file names no currency; the euro sign in every amount makes the rows EUR.
    "bank-csv/csv2ofx__c24.csv": Expected(
        BANK, records=3, totals={"EUR": -5000},
        earliest=_day("2025-12-05"), latest=_day("2026-01-05"),
    ),
    # Booked on the Posted Date (2016-01-02), not the Transaction Date.
    "bank-csv/csv2ofx__capitalone.csv": Expected(
        BANK, records=2, totals={"USD": 0},
        earliest=_day("2016-01-02"), latest=_day("2016-01-02"),
    ),
    # Judgement: amounts taken as written (all positive); the file gives no sign column.
    "bank-csv/csv2ofx__creditunion.csv": Expected(
        BANK, records=8, totals={"USD": 46_500_000},
        earliest=_day("2015-02-08"), latest=_day("2015-03-25"),
    ),
    # A Singapore account whose file names no currency: parsed for an SGD client.
    "bank-csv/csv2ofx__dbs.csv": Expected(
        BANK, records=9, totals={"SGD": -1_688_026},
        earliest=_day("2020-05-01"), latest=_day("2020-05-06"), default_currency="SGD",
    ),
    "bank-csv/csv2ofx__gls.csv": Expected(
        BANK, records=1, totals={"EUR": -9876},
        earliest=_day("2017-10-10"), latest=_day("2017-10-10"),
        balances=(StatementBalance("1234567890", "EUR", 123_456, _day("2017-10-10")),),
    ),
    # A Spanish account whose file names no currency: parsed for an EUR client.
    "bank-csv/csv2ofx__ingesp.csv": Expected(
        BANK, records=10, totals={"EUR": 35_021},
        earliest=_day("2022-03-24"), latest=_day("2022-12-31"), default_currency="EUR",
        balances=(StatementBalance("", "EUR", 31_888, _day("2022-12-31")),),
    ),
    # Both legs of the Checking/Savings transfers are kept; each row carries its Account Name.
    "bank-csv/csv2ofx__mint.csv": Expected(
        BANK, records=4, totals={"USD": -300_000},
        earliest=_day("2015-06-12"), latest=_day("2015-06-14"),
    ),
    "bank-csv/csv2ofx__mint_extra.csv": Expected(
        BANK, records=4, totals={"USD": -300_000},
        earliest=_day("2015-06-12"), latest=_day("2015-06-14"),
    ),
    # Judgement: no header, so nothing says which column is what; the client's profile must.
    "bank-csv/csv2ofx__mint_headerless.csv": Expected(
        rejection=(
            "file has no header row: line 1 already holds data (6/12/15, Transfer from "
            "Checking, Account Transfer, 1,000.00, debit, Checking, Savings); set has_header "
            "to false and the column indexes in the client's mapping profile"
        )
    ),
    # Currency from the header "Amount (EUR)".
    "bank-csv/csv2ofx__n26-fr.csv": Expected(
        BANK, records=2, totals={"EUR": 0},
        earliest=_day("2020-03-07"), latest=_day("2020-03-07"),
    ),
    "bank-csv/csv2ofx__outbank.csv": Expected(
        BANK, records=4, totals={"EUR": -3589},
        earliest=_day("2019-01-05"), latest=_day("2019-02-20"),
    ),
    # Judgement: both dates are 05/03/2021, which reads as 5 March or 3 May; guessing a
    # booking date is worse than asking for the profile's date_order.
    "bank-csv/csv2ofx__payoneer.csv": Expected(
        rejection=(
            'dates are ambiguous: every date in column "Transaction Date" (such as '
            "05/03/2021) reads as both DD/MM and MM/DD; set date_order in the client's "
            "mapping profile"
        )
    ),
    # Judgement: a Canadian card export whose purchases are positive. Imported as written;
    # the client's profile must set debit_is_negative, the file cannot say so itself.
    "bank-csv/csv2ofx__pcmastercard.csv": Expected(
        BANK, records=2, totals={"CAD": 5031},
        earliest=_day("2018-12-15"), latest=_day("2019-01-10"), default_currency="CAD",
    ),
    # Closing balance: the 08/17 deposit follows the 08/17 ATM row in the balance chain.
    "bank-csv/csv2ofx__schwab-checking-baltest-case2.csv": Expected(
        BANK, records=4, totals={"USD": -21_527},
        earliest=_day("2022-08-04"), latest=_day("2022-08-17"),
        balances=(StatementBalance("", "USD", 87_847, _day("2022-08-17")),),
    ),
    # Judgement: the two 08/17 rows chain either way (858.47 -> 878.47 or back), so the
    # closing balance cannot be told; none is stated rather than a guess.
    "bank-csv/csv2ofx__schwab-checking-baltest-case7.csv": Expected(
        BANK, records=2, totals={"USD": 0},
        earliest=_day("2022-08-17"), latest=_day("2022-08-17"),
    ),
    "bank-csv/csv2ofx__schwab-checking.csv": Expected(
        BANK, records=4, totals={"USD": -21_527},
        earliest=_day("2022-08-04"), latest=_day("2022-08-17"),
        balances=(StatementBalance("", "USD", 87_847, _day("2022-08-17")),),
    ),
    "bank-csv/csv2ofx__sparkasse.csv": Expected(
        BANK, records=1, totals={"EUR": -2414},
        earliest=_day("2020-11-04"), latest=_day("2020-11-04"),
    ),
    # Judgement: the account moves by the billed amount (Rechnungsbetrag) in the card's
    # currency; the Gebühr (fee) column is all zero here and is not read.
    "bank-csv/csv2ofx__sumup.csv": Expected(
        BANK, records=5, totals={"EUR": -179_012},
        earliest=_day("2024-01-20"), latest=_day("2024-12-29"),
        balances=(StatementBalance("", "EUR", 89_012, _day("2024-12-29")),),
    ),
    # The only date is the value date (Date de valeur).
    "bank-csv/csv2ofx__ubs-ch-fr_trimmed.csv": Expected(
        BANK, records=3, totals={"CHF": 3000},
        earliest=_day("2019-02-28"), latest=_day("2019-04-27"),
        balances=(StatementBalance("", "CHF", 1_141_394, _day("2019-04-27")),),
    ),
    # A general-ledger journal, recognised by content whatever folder it sits in.
    "bank-csv/csv2ofx__xero.csv": Expected(
        JOURNAL, records=13, debits={"USD": 53_100_000}, credits={"USD": 53_100_000},
        earliest=_day("2015-01-23"), latest=_day("2015-02-14"),
    ),
    "bank-csv/reds__dcu_checking.csv": Expected(
        BANK, records=10, totals={"USD": 50_000},
        earliest=_day("2021-12-15"), latest=_day("2021-12-31"),
        balances=(StatementBalance("", "USD", 50_000, _day("2021-12-31")),),
    ),
    # Judgement: imported, one account_ref per Account Number. Every row's Amount is taken as
    # the cash effect, including the LSEGY merger row (30,246.04) whose Type is "Shares";
    # the file does not mark it otherwise, so the reviewer of the import report must.
    "bank-csv/reds__fidelity_all_accounts.csv": Expected(
        BANK, records=21, totals={"USD": 2_483_859},
        earliest=_day("2025-09-18"), latest=_day("2025-12-04"),
    ),
    "bank-csv/reds__fidelity_cma_history.csv": Expected(
        BANK, records=11, totals={"USD": -767_175},
        earliest=_day("2023-01-05"), latest=_day("2023-01-27"),
    ),
    # Judgement: a brokerage cash history; every row is a cash movement (the sum equals the
    # file's own "Transactions Total" line, which is skipped).
    "bank-csv/reds__schwab_brokerage.csv": Expected(
        BANK, records=11, totals={"USD": -157_404},
        earliest=_day("2022-12-15"), latest=_day("2023-04-27"),
    ),
    # The stated balance does not reconcile (3.00 + 1.00 != 2.00); recording it as stated
    # lets the import service catch that.
    "bank-csv/reds__schwab_checking_repeated_header.csv": Expected(
        BANK, records=2, totals={"USD": -100},
        earliest=_day("2022-02-03"), latest=_day("2022-07-31"),
        balances=(StatementBalance("", "USD", 200, _day("2022-07-31")),),
    ),
    "bank-csv/reds__semicolon_with_preamble.csv": Expected(
        BANK, records=2, totals={"USD": -80_235},
        earliest=_day("2025-06-06"), latest=_day("2025-06-07"),
    ),
    # --- journal-csv ----------------------------------------------------------------------
    # "$" in the commodity column is the client's dollar.
    "journal-csv/hledger__print_csv_sample_journal.csv": Expected(
        JOURNAL, records=11, debits={"USD": 600}, credits={"USD": 600},
        earliest=_day("2008-01-01"), latest=_day("2008-12-31"),
    ),
    "journal-csv/oca__one_move2.csv": Expected(
        JOURNAL, records=3, debits={"USD": 120_000}, credits={"USD": 120_000},
        earliest=_day("2014-01-01"), latest=_day("2014-01-01"),
    ),
    # Judgement: parses cleanly. What is faulty is a tax code, and journal lines carry no
    # tax codes here (the amounts are already the posted amounts); both entries balance.
    # The import service still rejects it if its accounts are not in the client's chart.
    "journal-csv/oca__faulty_moves.csv": Expected(
        JOURNAL, records=6, debits={"USD": 240_000}, credits={"USD": 240_000},
        earliest=_day("2013-10-01"), latest=_day("2013-10-01"),
    ),
    # --- ofx ------------------------------------------------------------------------------
    # Judgement: csv2ofx writes transfers as INTRATRNRS between synthetic account ids; a
    # transfer response confirms an order, it states no account's booked transactions.
    "ofx/csv2ofx__default_w_splits.ofx": Expected(rejection=TRANSFERS_ONLY),
    "ofx/csv2ofx__transfer_example.ofx": Expected(rejection=TRANSFERS_ONLY),
    "ofx/ofxparse__account_listing_aggregation.ofx": Expected(
        rejection=f"{NO_STATEMENT} (account information only)"
    ),
    "ofx/ofxparse__anzcc.ofx": Expected(
        XML, records=1, totals={"AUD": -550},
        earliest=_day("2017-05-08"), latest=_day("2017-05-08"),
        balances=(StatementBalance("1234123412341234", "AUD", -12_345, _day("2017-05-10")),),
    ),
    "ofx/ofxparse__bank_medium.ofx": Expected(
        QFX, records=3, totals={"CAD": -34_527},
        earliest=_day("2009-04-01"), latest=_day("2009-04-03"),
        balances=(
            StatementBalance("160000100/12300 000012345678", "CAD", 38_234, _day("2009-05-23")),
        ),
    ),
    "ofx/ofxparse__bank_small.ofx": Expected(rejection=f"{NO_STATEMENT} (empty <OFX> element)"),
    "ofx/ofxparse__chase_cc.qfx": Expected(
        QFX, records=1, totals={"USD": -1000},
        earliest=_day("2020-01-01"), latest=_day("2020-01-01"),
        balances=(StatementBalance("0123012301230123", "USD", -1000, _day("2020-01-02")),),
    ),
    "ofx/ofxparse__checking.ofx": Expected(
        QFX, records=3, totals={"USD": -5950},
        earliest=_day("2011-03-31"), latest=_day("2011-04-07"),
        balances=(StatementBalance("5472369148/1452687~7", "USD", 10_099, _day("2013-05-25")),),
    ),
    # Three row errors: DTPOSTED missing, empty, and 20120231 (no such day).
    "ofx/ofxparse__date_missing.ofx": Expected(
        SGML, records=0, row_errors=3,
        balances=(StatementBalance("123845030/192639749", "USD", 0, _day("2011-06-14")),),
    ),
    # Two row errors on the one transaction: DTPOSTED 201120000000 and TRNAMT $120.
    "ofx/ofxparse__decimal_error.ofx": Expected(
        SGML, records=0, row_errors=2,
        balances=(StatementBalance("123845030/192639749", "CAD", 0, _day("2011-06-14")),),
    ),
    # An empty BALAMT states no balance; it is not an error.
    "ofx/ofxparse__empty_balance.ofx": Expected(
        SGML, records=1, totals={"CAD": 12_000},
        earliest=_day("2011-03-08"), latest=_day("2011-03-08"),
    ),
    "ofx/ofxparse__error_message.ofx": Expected(
        rejection="OFX statement response failed: code 2000 (ERROR): General Server Error"
    ),
    # Judgement (all investment files): only statements whose every transaction is a cash
    # line (INVBANKTRAN) are imported. Importing the cash lines of a statement that also
    # buys, sells or earns income would leave the cash account wrong without saying so.
    "ofx/ofxparse__fidelity-brokerage.ofx": Expected(
        rejection=_trades("fidelity.com/SomeAccountId", 2, "BUYMF, SELLMF")
    ),
    # Judgement: cash lines only, so imported; three amounts have four decimals
    # (115.8331...) that USD cannot hold, and rounding money silently is never right.
    "ofx/ofxparse__fidelity-savings.ofx": Expected(
        SGML, records=1, totals={"USD": -150_000}, row_errors=3,
        earliest=_day("2012-07-20"), latest=_day("2012-07-20"),
    ),
    "ofx/ofxparse__fidelity.ofx": Expected(
        rejection=_trades("fidelity.com/01234567890", 14, "BUYSTOCK, INCOME, SELLSTOCK")
    ),
    "ofx/ofxparse__investment_401k.ofx": Expected(
        rejection=_trades("example.org/12345678.123456-01", 3, "BUYMF, TRANSFER")
    ),
    # Cash lines only: imported in the currency each line names (USD on a CAD statement).
    "ofx/ofxparse__investment_medium.ofx": Expected(
        SGML, records=3, totals={"USD": -395},
        earliest=_day("2009-12-15"), latest=_day("2009-12-15"),
    ),
    # Two statements without transactions: nothing to import, two balances to check.
    "ofx/ofxparse__multiple_accounts.ofx": Expected(
        XML, records=0,
        balances=(
            StatementBalance("123/9100", "USD", 11_100, _day("2012-06-03")),
            StatementBalance("123/9200", "USD", 22_200, _day("2012-06-03")),
        ),
    ),
    # CURDEF is empty; the transaction's own CURRENCY aggregate says AUD.
    "ofx/ofxparse__ofx-v102-empty-tags.ofx": Expected(
        SGML, records=1, totals={"AUD": 1234},
        earliest=_day("2018-05-07"), latest=_day("2018-05-07"),
    ),
    "ofx/ofxparse__signon_fail.ofx": Expected(
        rejection=(
            "OFX sign-on failed: code 15500 (ERROR): Your request could not be processed "
            "because you supplied an invalid identification code or your password was "
            "incorrect"
        )
    ),
    "ofx/ofxparse__signon_success.ofx": Expected(rejection=f"{NO_STATEMENT} (sign-on only)"),
    "ofx/ofxparse__signon_success_no_message.ofx": Expected(
        rejection=f"{NO_STATEMENT} (sign-on only)"
    ),
    "ofx/ofxparse__suncorp.ofx": Expected(
        XML, records=1, totals={"AUD": -1685},
        earliest=_day("2013-12-15"), latest=_day("2013-12-15"),
        balances=(StatementBalance("SUNCORP/123456789", "AUD", 123_412, _day("2013-12-15")),),
    ),
    "ofx/ofxparse__td_ameritrade.ofx": Expected(
        rejection=(
            f"{ONLY_CASH}, and account ameritrade.com/121212121 has none "
            "(positions and balances only)"
        )
    ),
    "ofx/ofxparse__tiaacref.ofx": Expected(
        rejection=_trades("TIAA-CREF.ORG/111A1111 22B222 33C333", 1, "TRANSFER")
    ),
    "ofx/ofxparse__vanguard.ofx": Expected(
        rejection=_trades("vanguard.com/01234567890", 1, "SELLMF")
    ),
    "ofx/ofxparse__vanguard401k.ofx": Expected(
        rejection=_trades("vanguard.com/0123456", 5, "BUYMF, TRANSFER")
    ),
    # The second STMTTRN sits after </BANKTRANLIST> and shares the first one's FITID; both
    # are read (deduplication is the import service's job).
    "ofx/reds__ally_transactions_noheader.qfx": Expected(
        SGML, records=2, totals={"USD": -105_500},
        earliest=_day("2019-01-09"), latest=_day("2019-01-09"),
        balances=(StatementBalance("123456789/23456", "USD", 15_065, _day("2015-01-01")),),
    ),
    "ofx/reds__capitalone_360Checking.qfx": Expected(
        QFX, records=4, totals={"USD": 123_355},
        earliest=_day("2023-01-12"), latest=_day("2023-02-28"),
        balances=(StatementBalance("031176110/9876", "USD", 432_198, _day("2023-03-10")),),
    ),
    "ofx/reds__etrade_09092023.QFX": Expected(
        rejection=_trades("etrade.com/555555555", 4, "BUYSTOCK, INCOME, INVEXPENSE")
    ),
    "ofx/reds__invest_no_seclist.qfx": Expected(
        rejection=_trades("vanguard.com/444555", 1, "BUYMF")
    ),
    "ofx/reds__invest_no_ticker.qfx": Expected(
        rejection=_trades("vanguard.com/444555", 1, "BUYMF")
    ),
    "ofx/reds__ofxstatement_n26.ofx": Expected(
        SGML, records=1, totals={"EUR": -150},
        earliest=_day("2025-05-03"), latest=_day("2025-05-03"),
    ),
    "ofx/reds__vanguard_401k.qfx": Expected(
        rejection=_trades("vanguard.com/444555", 5, "BUYMF, TRANSFER")
    ),
    "ofx/reds__vanguard_OfxDownload.qfx": Expected(
        rejection=_trades("vanguard.com/1234567", 2, "BUYMF, SELLMF")
    ),
}  # fmt: skip


def corpus_files() -> list[str]:
    """Every file of the three folders, as ``folder/name`` keys of ``EXPECTED``."""
    return sorted(
        f"{folder}/{path.name}"
        for folder in CORPUS_FOLDERS
        for path in (CORPUS / folder).iterdir()
        if path.is_file()
    )
