"""A fake of the Stripe API on 127.0.0.1 for the calls engagements make: customers,
invoices, invoice items, finalize. Form-encoded requests, JSON answers, and Stripe's
idempotency rule: the same Idempotency-Key gets the first answer again."""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

from tests.conftest import free_port


class FakeStripe:
    def __init__(self) -> None:
        self.port = free_port()
        self.customers: dict[str, dict[str, Any]] = {}
        self.invoices: dict[str, dict[str, Any]] = {}
        self.items: list[dict[str, Any]] = []
        self.replies: dict[str, tuple[int, dict[str, Any]]] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(parse_qsl(self.rfile.read(length).decode()))
                key = self.headers.get("Idempotency-Key")
                with fake.lock:
                    fake.requests.append((self.path, key))
                    if key and key in fake.replies:
                        status, body = fake.replies[key]
                    else:
                        status, body = fake.handle(self.path, form, self.headers)
                        if key:
                            fake.replies[key] = (status, body)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Request-Id", f"req_{uuid.uuid4().hex[:12]}")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeStripe:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(self, path: str, form: dict[str, str], headers: Any) -> tuple[int, dict[str, Any]]:
        if not str(headers.get("Authorization", "")).startswith("Bearer sk_test_"):
            return 401, {
                "error": {"type": "invalid_request_error", "message": "Invalid API Key provided"}
            }
        if path == "/v1/customers":
            customer = {
                "id": f"cus_{uuid.uuid4().hex[:14]}",
                "object": "customer",
                "name": form.get("name"),
            }
            self.customers[customer["id"]] = customer
            return 200, customer
        if path == "/v1/invoices":
            if form.get("customer") not in self.customers:
                return 400, {
                    "error": {
                        "type": "invalid_request_error",
                        "param": "customer",
                        "message": f"No such customer: '{form.get('customer')}'",
                    }
                }
            invoice = {
                "id": f"in_{uuid.uuid4().hex[:14]}",
                "object": "invoice",
                "status": "draft",
                "customer": form["customer"],
                "total": 0,
                "currency": form.get("currency"),
                "metadata": {k[9:-1]: v for k, v in form.items() if k.startswith("metadata[")},
            }
            self.invoices[invoice["id"]] = invoice
            return 200, invoice
        if path == "/v1/invoiceitems":
            invoice = self.invoices.get(form.get("invoice", ""))
            if invoice is None:
                return 400, {
                    "error": {
                        "type": "invalid_request_error",
                        "param": "invoice",
                        "message": "No such invoice",
                    }
                }
            item = {
                "id": f"ii_{uuid.uuid4().hex[:14]}",
                "object": "invoiceitem",
                "amount": int(form["amount"]),
                "invoice": invoice["id"],
            }
            invoice["total"] += item["amount"]
            self.items.append(item)
            return 200, item
        if path.startswith("/v1/invoices/") and path.endswith("/finalize"):
            invoice = self.invoices.get(path.split("/")[3])
            if invoice is None:
                return 404, {
                    "error": {"type": "invalid_request_error", "message": "No such invoice"}
                }
            invoice["status"] = "open"
            return 200, invoice
        return 404, {
            "error": {
                "type": "invalid_request_error",
                "message": f"Unrecognized request URL (POST: {path})",
            }
        }
