"""The QuickBooks adapter's own pieces: exact amounts on the wire and fault reading, with
QuickBooks' recorded answers from the corpus."""

from __future__ import annotations

import json
from decimal import Decimal

from shared.adapters.quickbooks import Fault, dumps
from tests.conftest import CORPUS


def test_amounts_are_written_exactly_and_text_is_left_alone() -> None:
    body = {"Amount": Decimal("12345678901234.57"), "Tiny": Decimal("-0.001"), "Memo": "12.30"}

    text = dumps(body)

    assert text == '{"Amount": 12345678901234.57, "Tiny": -0.001, "Memo": "12.30"}'
    assert json.loads(text, parse_float=Decimal)["Amount"] == Decimal("12345678901234.57")


def test_reads_a_recorded_validation_fault() -> None:
    recorded = json.loads((CORPUS / "qbo" / "qboapi__fault_400_invalid_property.json").read_text())

    fault = Fault(recorded["Fault"], status=400)

    assert (fault.fault_type, fault.code, fault.stale) == ("ValidationFault", "2010", False)
    assert str(fault).startswith(
        "[quickbooks] ValidationFault 2010: Request has invalid or unsupported property - "
        'Property Name:Unrecognized field "BadJson"'
    )


def test_a_stale_object_fault_is_recognised() -> None:
    fault = Fault(
        {"type": "ValidationFault", "Error": [{"code": "5010", "Message": "Stale Object Error"}]}
    )

    assert fault.stale and str(fault) == "[quickbooks] ValidationFault 5010: Stale Object Error"
