"""The local classifier on the generated labelled set and on the real corpus documents."""

from __future__ import annotations

import io
import logging
from collections import Counter

import pytest
from pypdf import PdfReader

from shared.documents.inspect import PDF, inspect
from shared.documents.local import LOCAL_CLASSIFIER_VERSION, classify_text, parse_amount
from shared.documents.text import ocr_available, page_texts
from shared.domain.documents import DOC_CLASSES
from tests.conftest import CORPUS
from tests.documents.labelled import LabelledDoc, labelled_set

CLASS_ACCURACY_TARGET = 0.95
FIELD_MATCH_TARGET = 0.90

# The class of each corpus document (see the corpus MANIFEST), and fields read by eye.
CORPUS_DOCS = {
    "invoice2data__AzureInterior.pdf": ("invoice", {"invoice_date": "2023-03-20"}),
    "invoice2data__SammyMaystoneLinesTest.pdf": ("invoice", {}),
    "invoice2data__coolblue1.pdf": ("invoice", {}),
    "pdfjs__prefilled_f1040_2010.pdf": ("other", {}),
    "reds__mercury_cc_statement.pdf": ("credit_card_statement", {}),
    "reds__paystub_sample.pdf": ("pay_stub", {}),
}


@pytest.fixture(scope="module")
def labelled() -> list[LabelledDoc]:
    return labelled_set()


def classify(data: bytes):
    checked = inspect(data, max_bytes=10**9, max_pages=1000)
    return classify_text(page_texts(data, checked.media_type, checked.reader))


def confusion_matrix(pairs: list[tuple[str, str]]) -> str:
    classes = [c for c in DOC_CLASSES if any(c in pair for pair in pairs)]
    counts = Counter(pairs)
    width = max(len(c) for c in classes) + 1
    lines = ["truth \\ got".ljust(width) + " ".join(c[:6].rjust(6) for c in classes)]
    for truth in classes:
        cells = " ".join(str(counts[(truth, got)] or ".").rjust(6) for got in classes)
        lines.append(truth.ljust(width) + cells)
    return "\n".join(lines)


def test_the_labelled_set_is_broad_enough(labelled):
    text_docs = [d for d in labelled if not d.image_only]
    assert len(text_docs) >= 80
    assert len({d.doc_class for d in text_docs}) >= 10
    assert {d.layout for d in text_docs} == {"lines", "columns", "boxes"}
    assert max(d.pages for d in text_docs) == 3


def test_class_accuracy_and_key_fields_on_the_labelled_set(labelled, capsys):
    counted = [d for d in labelled if not d.image_only or ocr_available()]
    pairs, fields_right, fields_total, misses = [], 0, 0, []
    for doc in counted:
        result = classify(doc.data)
        assert result.classifier == "local"
        assert result.classifier_version == LOCAL_CLASSIFIER_VERSION
        pairs.append((doc.doc_class, result.doc_class))
        got = {f.name: f.value for f in result.fields}
        for name, value in doc.fields.items():
            fields_total += 1
            if got.get(name) == value:
                fields_right += 1
            else:
                misses.append(f"{doc.name} {name}: expected {value!r}, got {got.get(name)!r}")

    accuracy = sum(truth == got for truth, got in pairs) / len(pairs)
    field_match = fields_right / fields_total
    with capsys.disabled():
        print(f"\nlocal classifier on {len(pairs)} labelled documents")
        print(confusion_matrix(pairs))
        print(f"class accuracy {accuracy:.1%}, key fields {fields_right}/{fields_total}")
        for miss in misses[:20]:
            print("  miss:", miss)
    assert accuracy >= CLASS_ACCURACY_TARGET
    assert field_match >= FIELD_MATCH_TARGET


def test_scanned_pages_without_ocr_are_left_for_review(labelled):
    if ocr_available():
        pytest.skip("Tesseract is installed: scans are read and counted for accuracy")
    scans = [d for d in labelled if d.image_only]
    assert scans
    for doc in scans:
        result = classify(doc.data)
        assert (result.doc_class, result.confidence) == ("other", 0.5)


@pytest.mark.skipif(not ocr_available(), reason="no tesseract binary: OCR cannot run here")
def test_scanned_pages_are_read_by_ocr(labelled):
    scans = [d for d in labelled if d.image_only]
    right = sum(classify(d.data).doc_class == d.doc_class for d in scans)
    assert right / len(scans) >= CLASS_ACCURACY_TARGET


@pytest.mark.parametrize("name", sorted(CORPUS_DOCS))
def test_corpus_documents_are_classified(name, capsys):
    expected_class, expected_fields = CORPUS_DOCS[name]
    data = (CORPUS / "documents" / name).read_bytes()
    logging.getLogger("pypdf").setLevel(logging.ERROR)

    checked = inspect(data, max_bytes=10**9, max_pages=1000)
    result = classify(data)

    assert checked.media_type == PDF
    assert checked.page_count == len(PdfReader(io.BytesIO(data)).pages)
    with capsys.disabled():
        found = {f.name: f.value for f in result.fields if f.kind != "sensitive"}
        print(f"\n{name}: {result.doc_class} ({result.confidence:.2f}) {found}")
    assert result.doc_class == expected_class
    got = {f.name: f.value for f in result.fields}
    for field, value in expected_fields.items():
        assert got.get(field) == value


def test_the_card_statement_number_is_only_its_masked_form():
    data = (CORPUS / "documents" / "reds__mercury_cc_statement.pdf").read_bytes()
    fields = {f.name: f for f in classify(data).fields}
    assert fields["account_number"].kind == "sensitive"
    assert fields["account_number"].value.endswith("0123")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("$1,234.56", "1234.56"),
        ("1.234,56", "1234.56"),
        ("(12.00)", "-12.00"),
        ("€ 399,00", "399.00"),
        ("USD 7,000.10", "7000.10"),
        ("12", None),
    ],
)
def test_amounts_are_read_exactly(text, value):
    parsed = parse_amount(text)
    assert (str(parsed) if parsed is not None else None) == value
