"""The per-user rate limit is one budget for every process that serves the API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from typing import Any

import pytest

from tests.conftest import REPO
from tests.portal.conftest import make_user, send


def _requests_from_another_process(token: str, count: int) -> list[list[Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.portal.portal_requests", token, str(count)],
        cwd=REPO,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        check=True,
    )
    return list(json.loads(done.stdout))


def test_two_processes_draw_on_one_budget(
    portal: None, firm: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.config import get_settings

    # Two a minute: a token comes back after 30 s, far longer than the processes run.
    monkeypatch.setenv("PORTAL_RATE_LIMIT_PER_MIN", "2")
    get_settings.cache_clear()
    advisor = make_user(firm, "advisor")
    other = make_user(firm, "advisor")

    first = _requests_from_another_process(advisor.token, 1)
    second = _requests_from_another_process(advisor.token, 2)
    here = send("GET", "v1/clients", advisor.token)

    assert [status for status, _ in first] == [200]
    assert [status for status, _ in second] == [200, 429]
    assert 1 <= int(second[1][1]) <= 30
    assert here.status == 429
    assert _requests_from_another_process(other.token, 1)[0][0] == 200


def test_refused_and_failed_requests_count_too(
    portal: None, firm: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.config import get_settings

    monkeypatch.setenv("PORTAL_RATE_LIMIT_PER_MIN", "2")
    get_settings.cache_clear()
    advisor = make_user(firm, "advisor")

    missing = [send("GET", f"v1/clients/{uuid.uuid4()}", advisor.token).status for _ in range(2)]
    after = send("GET", "v1/clients", advisor.token)

    assert missing == [404, 404]
    assert after.status == 429
    assert after.json()["detail"] == "too many requests; at most 2 a minute"
