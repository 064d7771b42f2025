"""A fake of the Document Intelligence REST API (2024-11-30) on 127.0.0.1, in the shapes
Microsoft documents: ``POST .../documentModels/{model}:analyze`` and
``POST .../documentClassifiers/{id}:analyze`` answer 202 with an ``Operation-Location``;
``GET`` on it answers ``notStarted``/``running`` then ``succeeded`` with ``analyzeResult``,
or ``failed`` with ``error``. Faults are scripted per test: 429 with Retry-After, 5xx."""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_SUBMIT = re.compile(
    r"^/documentintelligence/(documentModels|documentClassifiers)/([^/:]+):analyze$"
)
_RESULT = re.compile(
    r"^/documentintelligence/(documentModels|documentClassifiers)/([^/]+)/analyzeResults/([^/?]+)$"
)


@dataclass
class FakeDocIntel:
    """What the fake answers, and what it was asked."""

    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    """analyzeResult per model or classifier id."""
    failures: dict[str, dict[str, Any]] = field(default_factory=dict)
    """An ``error`` object per model id whose analyses fail."""
    faults: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    """Answers given to the next submissions instead of 202: (status, headers)."""
    running_polls: int = 1
    """How many polls answer ``running`` before the outcome."""
    never_finish: bool = False
    submissions: list[str] = field(default_factory=list)
    polls: int = 0
    keys_seen: set[str] = field(default_factory=set)
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    endpoint: str = ""


def _handler(fake: FakeDocIntel) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None):
            payload = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("apim-request-id", str(uuid.uuid4()))
            if payload:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_POST(self) -> None:
            path, _, query = self.path.partition("?")
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            fake.keys_seen.add(self.headers.get("Ocp-Apim-Subscription-Key", ""))
            match = _SUBMIT.match(path)
            if match is None or "api-version=" not in query:
                self._send(404, {"error": {"code": "NotFound", "message": "no such route"}})
                return
            kind, model = match.groups()
            with fake.lock:
                fake.submissions.append(model)
                if fake.faults:
                    status, headers = fake.faults.pop(0)
                    self._send(status, _error(status), headers)
                    return
                op = str(uuid.uuid4())
                fake.operations[op] = {"model": model, "polls": 0}
            location = (
                f"{fake.endpoint}/documentintelligence/{kind}/{model}/analyzeResults/{op}?{query}"
            )
            self._send(202, None, {"Operation-Location": location, "Retry-After": "0"})

        def do_GET(self) -> None:
            path = self.path.partition("?")[0]
            match = _RESULT.match(path)
            with fake.lock:
                fake.polls += 1
                op = fake.operations.get(match.group(3)) if match else None
                if op is None:
                    self._send(404, {"error": {"code": "NotFound", "message": "no such result"}})
                    return
                op["polls"] += 1
                model, polls = op["model"], op["polls"]
            stamp = {
                "createdDateTime": "2026-01-01T00:00:00Z",
                "lastUpdatedDateTime": "2026-01-01T00:00:01Z",
            }
            if fake.never_finish or polls <= fake.running_polls:
                self._send(200, {"status": "running", **stamp}, {"Retry-After": "0"})
            elif model in fake.failures:
                self._send(200, {"status": "failed", **stamp, "error": fake.failures[model]})
            else:
                result = {
                    "apiVersion": "2024-11-30",
                    "modelId": model,
                    "content": "",
                    "pages": [],
                    **fake.results.get(model, {}),
                }
                self._send(200, {"status": "succeeded", **stamp, "analyzeResult": result})

    return Handler


def _error(status: int) -> dict[str, Any]:
    code = "TooManyRequests" if status == 429 else "InternalServerError"
    return {"error": {"code": code, "message": f"fake answered {status}"}}


@contextmanager
def running(fake: FakeDocIntel) -> Iterator[FakeDocIntel]:
    """Serve ``fake`` on a free port of 127.0.0.1 until the block ends."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    fake.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
