"""A generated, labelled set of client documents: each PDF with the class and key fields it
was made from, in varied layouts, fonts, rotations and page counts."""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

from reportlab.lib.pagesizes import letter
from reportlab.pdfgen.canvas import Canvas

FONTS = ("Helvetica", "Times-Roman", "Courier", "Helvetica-Bold", "Times-Bold")
LAYOUTS = ("lines", "columns", "boxes")
VENDORS = (
    "Northwind Traders",
    "Blue Heron Supply Co",
    "Cedar & Pine Consulting",
    "Harbor Office Goods",
    "Summit Print Works",
    "Greenleaf Catering LLC",
)
EMPLOYERS = ("Contoso Manufacturing Inc", "Fabrikam Foods LLC", "Tailspin Toys Corp")
BANKS = ("First Prairie Bank", "Lakeshore Credit Union", "Granite State Bank")


@dataclass(slots=True)
class LabelledDoc:
    """One generated PDF and its ground truth (fields as the classifier reports them)."""

    name: str
    doc_class: str
    data: bytes
    fields: dict[str, str]
    image_only: bool = False
    pages: int = 1
    layout: str = ""


@dataclass(slots=True)
class _Spec:
    title: str
    pairs: list[tuple[str, str]]
    body: list[str] = field(default_factory=list)


def _money(rng: random.Random, low: int, high: int) -> Decimal:
    return (Decimal(rng.randint(low * 100, high * 100)) / 100).quantize(Decimal("0.01"))


def _fmt_money(rng: random.Random, amount: Decimal, symbol: str = "$") -> str:
    style = rng.randrange(3)
    if style == 0:
        return f"{symbol}{amount:,.2f}"
    if style == 1:
        return f"{amount:.2f}"
    return f"{symbol} {amount:,.2f}"


def _fmt_date(rng: random.Random, day: date) -> str:
    style = rng.randrange(3)
    if style == 0:
        return f"{day.month:02d}/{day.day:02d}/{day.year}"
    if style == 1:
        return day.isoformat()
    return f"{day.strftime('%B')} {day.day}, {day.year}"


def _tin(rng: random.Random) -> str:
    return f"{rng.randint(10, 98)}-{rng.randint(1000000, 9999999)}"


def _ssn(rng: random.Random) -> str:
    return f"{rng.randint(100, 899)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}"


def _day(rng: random.Random) -> date:
    return date(2025, 1, 1) + timedelta(days=rng.randrange(360))


def _w2(rng: random.Random) -> tuple[_Spec, dict[str, str]]:
    year, ein = str(rng.choice((2023, 2024, 2025))), _tin(rng)
    wages = _money(rng, 20000, 180000)
    withheld = (wages * Decimal("0.12")).quantize(Decimal("0.01"))
    spec = _Spec(
        f"Form W-2 Wage and Tax Statement {year}",
        [
            ("a Employee's social security number", _ssn(rng)),
            ("b Employer identification number (EIN)", ein),
            ("c Employer's name", rng.choice(EMPLOYERS)),
            ("1 Wages, tips, other compensation", _fmt_money(rng, wages)),
            ("2 Federal income tax withheld", _fmt_money(rng, withheld)),
            ("3 Social security wages", _fmt_money(rng, wages)),
        ],
        ["Copy B - To Be Filed With Employee's FEDERAL Tax Return."],
    )
    truth = {
        "tax_year": year,
        "employer_ein": ein,
        "wages": str(wages),
        "federal_tax_withheld": str(withheld),
    }
    return spec, truth


def _f1099(kind: str, amount_label: str, amount_name: str) -> _Maker:
    titles = {
        "NEC": "Nonemployee Compensation",
        "INT": "Interest Income",
        "DIV": "Dividends and Distributions",
    }

    def make(rng: random.Random) -> tuple[_Spec, dict[str, str]]:
        year, tin = str(rng.choice((2024, 2025))), _tin(rng)
        amount = _money(rng, 100, 60000)
        spec = _Spec(
            f"Form 1099-{kind} {titles[kind]} for calendar year {year}",
            [
                ("PAYER'S name", rng.choice(VENDORS)),
                ("PAYER'S TIN", tin),
                ("RECIPIENT'S TIN", _ssn(rng)),
                (amount_label, _fmt_money(rng, amount)),
                ("4 Federal income tax withheld", _fmt_money(rng, Decimal("0.00"))),
            ],
            ["Copy B For Recipient. This is important tax information."],
        )
        return spec, {"tax_year": year, "payer_tin": tin, amount_name: str(amount)}

    return make


def _1099_misc(rng: random.Random) -> tuple[_Spec, dict[str, str]]:
    year, tin = str(rng.choice((2024, 2025))), _tin(rng)
    rents, other = _money(rng, 1000, 30000), _money(rng, 50, 5000)
    spec = _Spec(
        f"Form 1099-MISC Miscellaneous Information {year}",
        [
            ("PAYER'S TIN", tin),
            ("1 Rents", _fmt_money(rng, rents)),
            ("3 Other income", _fmt_money(rng, other)),
        ],
        ["Copy B For Recipient."],
    )
    truth = {"tax_year": year, "payer_tin": tin, "rents": str(rents), "other_income": str(other)}
    return spec, truth


def _1098(rng: random.Random) -> tuple[_Spec, dict[str, str]]:
    year, tin = str(rng.choice((2024, 2025))), _tin(rng)
    interest = _money(rng, 2000, 30000)
    spec = _Spec(
        f"Form 1098 Mortgage Interest Statement {year}",
        [
            ("RECIPIENT'S/LENDER'S TIN", tin),
            ("PAYER'S/BORROWER'S TIN", _ssn(rng)),
            ("1 Mortgage interest received from payer(s)/borrower(s)", _fmt_money(rng, interest)),
            ("2 Outstanding mortgage principal", _fmt_money(rng, _money(rng, 90000, 600000))),
        ],
    )
    return spec, {"tax_year": year, "recipient_tin": tin, "mortgage_interest": str(interest)}


def _statement(card: bool) -> _Maker:
    def make(rng: random.Random) -> tuple[_Spec, dict[str, str]]:
        start = _day(rng).replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1) - timedelta(days=1)
        opening, closing = _money(rng, 100, 20000), _money(rng, 100, 20000)
        account = f"{rng.randint(10000000, 99999999)}{rng.randint(1000, 9999)}"
        if card:
            title = f"{rng.choice(BANKS)} Credit Card Statement"
            labels = ("Card number", "Previous balance", "New balance")
            extra = [
                ("Minimum payment due", _fmt_money(rng, Decimal("35.00"))),
                ("Credit limit", _fmt_money(rng, Decimal("15000.00"))),
            ]
        else:
            title = f"{rng.choice(BANKS)} Bank Statement"
            labels = ("Account number", "Opening balance", "Closing balance")
            extra = [
                ("Deposits", _fmt_money(rng, _money(rng, 100, 9000))),
                ("Withdrawals", _fmt_money(rng, _money(rng, 100, 9000))),
            ]
        spec = _Spec(
            title,
            [
                (labels[0], account),
                ("Statement period", f"{_fmt_date(rng, start)} to {_fmt_date(rng, end)}"),
                (labels[1], _fmt_money(rng, opening)),
                *extra,
                (labels[2], _fmt_money(rng, closing)),
            ],
            ["Checking account activity" if not card else "Purchases and adjustments"],
        )
        truth = {
            "account_number": account,
            "period_start": start.isoformat(),
            "period_end": end.isoformat(),
            "opening_balance": str(opening),
            "closing_balance": str(closing),
        }
        return spec, truth

    return make


def _invoice(rng: random.Random) -> tuple[_Spec, dict[str, str]]:
    vendor, number, day = rng.choice(VENDORS), f"INV-{rng.randint(1000, 99999)}", _day(rng)
    total = _money(rng, 50, 25000)
    spec = _Spec(
        "INVOICE",
        [
            ("Vendor", vendor),
            ("Invoice number", number),
            ("Invoice date", _fmt_date(rng, day)),
            ("Bill to", "Acme Dental PLLC"),
            ("Payment terms", "Net 30"),
            ("Amount due", _fmt_money(rng, total)),
        ],
    )
    truth = {
        "vendor": vendor,
        "invoice_number": number,
        "invoice_date": day.isoformat(),
        "total": str(total),
    }
    return spec, truth


def _receipt(rng: random.Random) -> tuple[_Spec, dict[str, str]]:
    vendor, number, day = rng.choice(VENDORS), f"R{rng.randint(100000, 999999)}", _day(rng)
    total = _money(rng, 2, 900)
    spec = _Spec(
        "RECEIPT",
        [
            ("Vendor", vendor),
            ("Receipt number", number),
            ("Date", _fmt_date(rng, day)),
            ("Cashier", "Dana"),
            ("Total paid", _fmt_money(rng, total)),
        ],
        ["Thank you for your purchase!"],
    )
    truth = {
        "vendor": vendor,
        "receipt_number": number,
        "date": day.isoformat(),
        "total": str(total),
    }
    return spec, truth


def _pay_stub(rng: random.Random) -> tuple[_Spec, dict[str, str]]:
    start = _day(rng)
    end = start + timedelta(days=13)
    gross = _money(rng, 1500, 9000)
    net = (gross * Decimal("0.72")).quantize(Decimal("0.01"))
    spec = _Spec(
        f"{rng.choice(EMPLOYERS)} Earnings Statement",
        [
            ("Pay period", f"{_fmt_date(rng, start)} - {_fmt_date(rng, end)}"),
            ("Pay date", _fmt_date(rng, end + timedelta(days=3))),
            ("Gross pay", _fmt_money(rng, gross)),
            ("Federal withholding", _fmt_money(rng, gross - net)),
            ("Net pay", _fmt_money(rng, net)),
        ],
        ["Year to date figures are shown on the next statement."],
    )
    truth = {
        "period_start": start.isoformat(),
        "period_end": end.isoformat(),
        "gross_pay": str(gross),
        "net_pay": str(net),
    }
    return spec, truth


def _engagement(rng: random.Random) -> tuple[_Spec, dict[str, str]]:
    spec = _Spec(
        "Engagement Letter",
        [("Client", "Acme Dental PLLC"), ("Date", _fmt_date(rng, _day(rng)))],
        [
            "We are pleased to confirm our acceptance of this engagement.",
            "Scope of services: preparation of the federal and state income tax returns.",
            "Fees are billed monthly as the work progresses.",
            "Please sign and return a copy of this letter.",
        ],
    )
    return spec, {}


def _other(rng: random.Random) -> tuple[_Spec, dict[str, str]]:
    spec = _Spec(
        "Meeting notes",
        [("Attendees", "Dana, Lee"), ("Topic", "Office move")],
        ["The lease on the new office starts next quarter.", "Parking is shared."],
    )
    return spec, {}


_Maker = type(_w2)

MAKERS: dict[str, _Maker] = {
    "w2": _w2,
    "1099-nec": _f1099("NEC", "1 Nonemployee compensation", "nonemployee_compensation"),
    "1099-int": _f1099("INT", "1 Interest income", "interest_income"),
    "1099-div": _f1099("DIV", "1a Total ordinary dividends", "ordinary_dividends"),
    "1099-misc": _1099_misc,
    "1098": _1098,
    "bank_statement": _statement(card=False),
    "credit_card_statement": _statement(card=True),
    "invoice": _invoice,
    "receipt": _receipt,
    "pay_stub": _pay_stub,
    "engagement_letter": _engagement,
    "other": _other,
}


def render(spec: _Spec, *, layout: str, font: str, rotation: int, pages: int) -> bytes:
    """Draw a spec as a PDF; pages after the first carry filler text."""
    out = io.BytesIO()
    canvas = Canvas(out, pagesize=letter)
    _, height = letter
    canvas.setPageRotation(rotation)
    canvas.setFont(font, 15)
    canvas.drawString(72, height - 72, spec.title)
    y = height - 110
    for index, (label, value) in enumerate(spec.pairs):
        if layout == "lines":
            canvas.setFont(font, 10)
            canvas.drawString(72, y, f"{label}: {value}")
            y -= 20
        elif layout == "columns":
            canvas.setFont(font, 10)
            canvas.drawString(72, y, label)
            canvas.drawString(340, y, value)
            y -= 20
        else:
            x = 72 + (index % 2) * 240
            top = y - (index // 2) * 52
            canvas.rect(x - 4, top - 40, 232, 50)
            canvas.setFont(font, 7)
            canvas.drawString(x, top, label)
            canvas.setFont(font, 11)
            canvas.drawString(x, top - 24, value)
    if layout == "boxes":
        y -= ((len(spec.pairs) + 1) // 2) * 52
    canvas.setFont(font, 9)
    for line in spec.body:
        y -= 16
        canvas.drawString(72, y, line)
    for number in range(2, pages + 1):
        canvas.showPage()
        canvas.setPageRotation(rotation)
        canvas.setFont(font, 9)
        canvas.drawString(72, height - 72, f"Page {number} of {pages}")
        canvas.drawString(72, height - 90, "Notes and general terms; keep for your records.")
    canvas.save()
    return out.getvalue()


def render_image_only(spec: _Spec) -> bytes:
    """The spec as a scanned page: one image, no text layer."""
    from PIL import Image, ImageDraw

    image = Image.new("L", (1275, 1650), 255)
    draw = ImageDraw.Draw(image)
    y = 100
    draw.text((100, y), spec.title, fill=0)
    for label, value in spec.pairs:
        y += 40
        draw.text((100, y), f"{label}: {value}", fill=0)
    out = io.BytesIO()
    canvas = Canvas(out, pagesize=letter)
    from reportlab.lib.utils import ImageReader

    canvas.drawImage(ImageReader(image), 0, 0, width=letter[0], height=letter[1])
    canvas.save()
    return out.getvalue()


def labelled_set(count: int = 104, *, seed: int = 2026, image_only: int = 4) -> list[LabelledDoc]:
    """``count`` text PDFs spread over every class, plus ``image_only`` scanned ones."""
    rng = random.Random(seed)
    classes = list(MAKERS)
    docs = []
    for index in range(count):
        doc_class = classes[index % len(classes)]
        spec, truth = MAKERS[doc_class](rng)
        layout = LAYOUTS[(index // len(classes)) % len(LAYOUTS)]
        pages = 1 + rng.randrange(3)
        data = render(
            spec,
            layout=layout,
            font=rng.choice(FONTS),
            rotation=rng.choice((0, 0, 90, 180, 270)),
            pages=pages,
        )
        name = f"{index:03d}-{doc_class}-{layout}.pdf"
        docs.append(LabelledDoc(name, doc_class, data, truth, pages=pages, layout=layout))
    for index in range(image_only):
        doc_class = classes[index % len(classes)]
        spec, truth = MAKERS[doc_class](rng)
        data = render_image_only(spec)
        docs.append(LabelledDoc(f"scan-{index:02d}-{doc_class}.pdf", doc_class, data, truth, True))
    return docs
