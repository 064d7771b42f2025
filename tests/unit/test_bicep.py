"""The Bicep templates create what the code uses."""

from __future__ import annotations

import json
import re
from pathlib import Path

from shared.config import CONTAINERS
from shared.messaging import QUEUES, iso_duration, queues_json

BICEP = Path(__file__).parents[2] / "bicep"


def test_every_container_the_code_uses_is_provisioned():
    text = (BICEP / "main.bicep").read_text()
    block = re.search(r"param containers array = \[(.*?)\]", text, re.S)
    assert block is not None
    declared = set(re.findall(r"'([a-z0-9-]+)'", block.group(1)))
    assert declared == set(CONTAINERS)


def test_storage_refuses_anonymous_access_and_old_tls():
    text = (BICEP / "modules" / "storage.bicep").read_text()
    assert "allowBlobPublicAccess: false" in text
    assert "minimumTlsVersion: 'TLS1_2'" in text
    assert "supportsHttpsTrafficOnly: true" in text


def test_the_bicep_queues_are_the_queues_the_code_defines():
    declared = json.loads((BICEP / "queues.json").read_text())
    assert declared == queues_json(), "run `make queues` to regenerate bicep/queues.json"
    assert [q["name"] for q in declared] == list(QUEUES)


def test_service_bus_states_every_queue_property_and_refuses_keys():
    text = (BICEP / "modules" / "servicebus.bicep").read_text()
    assert "disableLocalAuth: true" in text
    assert "loadJsonContent('../queues.json')" in text
    for name in queues_json()[0]:
        if name != "name":
            assert f"{name}: queue.{name}" in text, name


def test_iso_durations_are_written_as_arm_expects():
    assert [iso_duration(s) for s in (60, 600, 14 * 86400, 90, 3661, 0)] == [
        "PT1M",
        "PT10M",
        "P14D",
        "PT1M30S",
        "PT1H1M1S",
        "PT0S",
    ]
