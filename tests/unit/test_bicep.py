"""The Bicep templates create what the code uses."""

from __future__ import annotations

import re
from pathlib import Path

from shared.config import CONTAINERS

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
