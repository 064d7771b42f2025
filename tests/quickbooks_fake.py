"""A fake of the QuickBooks Online Accounting API (v3, JSON) and of Intuit's OAuth 2.0 token
endpoints, on 127.0.0.1, for tests and the benchmark.

It follows Intuit's documented shapes: entity envelopes (``{"Invoice": {...}, "time": ...}``),
``QueryResponse``, ``BatchItemRequest``/``BatchItemResponse`` (30 items at most),
``CDCResponse``, and ``Fault`` bodies with their codes (ValidationFault 2010/2500/6000,
stale object 5010, ThrottleExceeded 003001 with 429, AuthenticationFailed 003200 with 401).
A ``requestid`` query parameter makes a request idempotent: the same id is answered with the
first answer, without doing the work again.

Limits are enforced per realm as QuickBooks does: ``requests_per_min`` in a fixed window and
``max_concurrent`` requests at once; ``clock_speed`` runs the window's clock faster. Faults
are injected with ``inject``.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

BATCH_MAX_ITEMS = 30
ENTITIES = ("Account", "Customer", "Invoice", "Payment", "JournalEntry")

DEFAULT_ACCOUNTS = (
    ("Cash at bank", "Asset", "Bank"),
    ("Accounts receivable", "Asset", "Accounts Receivable"),
    ("Accounts payable", "Liability", "Accounts Payable"),
    ("Owner's equity", "Equity", "Equity"),
    ("Revenue", "Revenue", "Income"),
    ("Operating expenses", "Expense", "Expense"),
    ("Bank and payment fees", "Expense", "Expense"),
)


def fault(
    kind: str, code: str, message: str, detail: str = "", element: str = ""
) -> dict[str, Any]:
    """A ``Fault`` object as QuickBooks writes it."""
    error = {"Message": message, "Detail": detail or message, "code": code, "element": element}
    return {"Error": [error], "type": kind}


@dataclass
class Injection:
    kind: str  # "429", "500", "timeout", "expire_token", "stale"
    remaining: int
    path: str = ""
    retry_after_s: int | None = None


@dataclass
class RealmState:
    entities: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    next_id: int = 1
    window_started: float = 0.0
    window_requests: int = 0
    in_flight: int = 0


class FakeQuickBooks:
    """The fake server. Use as a context manager; ``api_url`` is the v3 base URL."""

    def __init__(
        self,
        *,
        requests_per_min: int = 500,
        max_concurrent: int = 10,
        clock_speed: float = 1.0,
        access_token_ttl_s: int = 3600,
        latency_s: float = 0.0,
    ) -> None:
        self.requests_per_min = requests_per_min
        self.max_concurrent = max_concurrent
        self.clock_speed = clock_speed
        self.access_token_ttl_s = access_token_ttl_s
        self.latency_s = latency_s
        self.timeout_delay_s = 3.0
        self.lock = threading.Lock()
        self.realms: dict[str, RealmState] = defaultdict(RealmState)
        self.answers: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
        self.injections: list[Injection] = []
        self.requests: list[tuple[str, str]] = []
        self.throttled_by_limit = 0
        self.throttled_injected = 0
        self.access_tokens: dict[str, tuple[str, float]] = {}
        self.refresh_tokens: dict[str, str] = {}
        self.codes: dict[str, str] = {}
        self.revoked: list[str] = []
        self.refreshes = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> FakeQuickBooks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/v3"

    @property
    def discovery_url(self) -> str:
        return f"{self.base_url}/.well-known/openid_sandbox_configuration"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/oauth2/v1/tokens/bearer"

    @property
    def revoke_url(self) -> str:
        return f"{self.base_url}/oauth2/v1/tokens/revoke"

    # -- test controls ---------------------------------------------------------------------

    def grant(self, realm_id: str) -> tuple[str, str]:
        """Issue a token pair for a realm as a completed consent would: (access, refresh)."""
        with self.lock:
            return self._issue(realm_id)

    def authorization_code(self, realm_id: str) -> str:
        """A one-time authorization code for a realm, as Intuit's consent page redirects with."""
        code = "AB" + uuid.uuid4().hex
        with self.lock:
            self.codes[code] = realm_id
        return code

    def seed_accounts(self, realm_id: str) -> None:
        for name, classification, account_type in DEFAULT_ACCOUNTS:
            self.put(
                realm_id,
                "Account",
                {
                    "Name": name,
                    "FullyQualifiedName": name,
                    "Classification": classification,
                    "AccountType": account_type,
                    "Active": True,
                },
            )

    def put(self, realm_id: str, entity: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store an entity as if a QuickBooks user made it; returns it with Id and SyncToken."""
        with self.lock:
            return self._create(self.realms[realm_id], entity, obj)

    def edit(self, realm_id: str, entity: str, qbo_id: str, **changes: Any) -> dict[str, Any]:
        """Change an entity as a QuickBooks user would: its SyncToken moves on."""
        with self.lock:
            stored = self.realms[realm_id].entities[entity][qbo_id]
            stored.update(changes)
            self._touch(stored)
            return dict(stored)

    def remove(self, realm_id: str, entity: str, qbo_id: str) -> None:
        with self.lock:
            del self.realms[realm_id].entities[entity][qbo_id]

    def all(self, realm_id: str, entity: str) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(v) for v in self.realms[realm_id].entities[entity].values()]

    def inject(
        self, kind: str, count: int = 1, *, path: str = "", retry_after_s: int | None = None
    ) -> None:
        """Make the next ``count`` API requests (whose path contains ``path``) fail with ``kind``:
        ``429`` (with Retry-After when given), ``500``, ``timeout`` (the work is done, the
        answer comes too late), ``expire_token`` (every access token expires now) or ``stale``
        (the entity is changed by someone else just before an update is applied)."""
        with self.lock:
            self.injections.append(Injection(kind, count, path, retry_after_s))

    def api_requests(self, realm_id: str | None = None) -> int:
        with self.lock:
            return sum(1 for realm, _ in self.requests if realm_id in (None, realm))

    # -- internals -------------------------------------------------------------------------

    def _issue(self, realm_id: str) -> tuple[str, str]:
        access = "eyJ" + uuid.uuid4().hex
        refresh = "AB11" + uuid.uuid4().hex
        self.access_tokens[access] = (realm_id, time.monotonic() + self.access_token_ttl_s)
        self.refresh_tokens[refresh] = realm_id
        return access, refresh

    def _create(self, realm: RealmState, entity: str, obj: dict[str, Any]) -> dict[str, Any]:
        stored = dict(obj)
        stored.update(Id=str(realm.next_id), SyncToken="0", domain="QBO", sparse=False)
        realm.next_id += 1
        now = _stamp()
        stored["MetaData"] = {"CreateTime": now, "LastUpdatedTime": now}
        realm.entities[entity][stored["Id"]] = stored
        return dict(stored)

    def _touch(self, stored: dict[str, Any]) -> None:
        stored["SyncToken"] = str(int(stored["SyncToken"]) + 1)
        stored.setdefault("MetaData", {})["LastUpdatedTime"] = _stamp()

    def _take_injection(self, path: str) -> Injection | None:
        for injection in self.injections:
            if injection.remaining > 0 and injection.path in path:
                injection.remaining -= 1
                return injection
        return None

    def _admit(self, realm_id: str) -> bool:
        """Count a request against the realm's limits; False means throttled."""
        realm = self.realms[realm_id]
        now = time.monotonic() * self.clock_speed
        if now - realm.window_started >= 60:
            realm.window_started = now
            realm.window_requests = 0
        realm.window_requests += 1
        if realm.window_requests > self.requests_per_min or realm.in_flight >= self.max_concurrent:
            return False
        realm.in_flight += 1
        return True

    def handle_api(
        self, method: str, path: str, query: dict[str, str], token: str | None, body: Any
    ) -> tuple[int, dict[str, Any], dict[str, str], float]:
        """Answer one API request: (status, body, headers, delay before answering)."""
        parts = path.strip("/").split("/")
        if len(parts) < 4 or parts[:2] != ["v3", "company"]:
            return 404, {"Fault": fault("SystemFault", "404", "Not found")}, {}, 0.0
        realm_id, rest = parts[2], parts[3:]
        with self.lock:
            self.requests.append((realm_id, path))
            injection = self._take_injection(path)
            if injection is not None and injection.kind == "expire_token":
                self.access_tokens.clear()
                injection = None
            granted = self.access_tokens.get(token or "")
            if granted is None or granted[0] != realm_id or granted[1] < time.monotonic():
                message = "message=AuthenticationFailed; errorCode=003200; statusCode=401"
                body401 = {"Fault": fault("AUTHENTICATION", "3200", message), "time": _stamp()}
                return 401, body401, {}, 0.0
            if injection is not None and injection.kind == "429":
                self.throttled_injected += 1
                return 429, _throttle_body(), _retry_after(injection), 0.0
            if injection is not None and injection.kind == "500":
                return (
                    500,
                    {
                        "Fault": fault(
                            "SystemFault",
                            "10000",
                            "An application error has occurred while processing your request",
                        )
                    },
                    {},
                    0.0,
                )
            if not self._admit(realm_id):
                self.throttled_by_limit += 1
                return 429, _throttle_body(), {}, 0.0
        try:
            time.sleep(self.latency_s)
            with self.lock:
                status, answer = self._answer(realm_id, method, rest, query, body, injection)
        finally:
            with self.lock:
                self.realms[realm_id].in_flight -= 1
        delay = (
            self.timeout_delay_s if injection is not None and injection.kind == "timeout" else 0
        )
        return status, answer, {}, delay

    def _answer(
        self,
        realm_id: str,
        method: str,
        rest: list[str],
        query: dict[str, str],
        body: Any,
        injection: Injection | None,
    ) -> tuple[int, dict[str, Any]]:
        request_id = query.get("requestid")
        if request_id and (realm_id, request_id) in self.answers:
            return self.answers[(realm_id, request_id)]
        realm = self.realms[realm_id]
        resource = rest[0].lower()
        if method == "GET" and resource == "query":
            status, answer = 200, self._query(realm, query.get("query", ""))
        elif method == "GET" and resource == "cdc":
            status, answer = 200, self._cdc(realm, query)
        elif method == "POST" and resource == "batch":
            status, answer = self._batch(realm, body, injection)
        else:
            entity = _entity_name(resource)
            if entity is None:
                return 400, {"Fault": fault("ValidationFault", "2010", "Unsupported entity")}
            if method == "GET" and len(rest) == 2:
                stored = realm.entities[entity].get(rest[1])
                if stored is None:
                    return 400, {"Fault": _not_found(entity, rest[1])}
                status, answer = 200, {entity: dict(stored)}
            elif method == "POST":
                result = self._write(realm, entity, query.get("operation", ""), body, injection)
                status = 400 if "Fault" in result else 200
                answer = result if "Fault" in result else {entity: result[entity]}
            else:
                return 405, {"Fault": fault("ValidationFault", "405", "Method not allowed")}
        answer["time"] = _stamp()
        if request_id:
            self.answers[(realm_id, request_id)] = (status, answer)
        return status, answer

    def _write(
        self,
        realm: RealmState,
        entity: str,
        operation: str,
        obj: Any,
        injection: Injection | None,
    ) -> dict[str, Any]:
        if not isinstance(obj, dict):
            return {"Fault": fault("ValidationFault", "2010", "Request has invalid body")}
        problem = self._validate(realm, entity, obj)
        if problem is not None:
            return {"Fault": problem}
        qbo_id = obj.get("Id")
        if not qbo_id:
            created = self._create(realm, entity, obj)
            if entity == "Invoice":
                self._set_balance(realm.entities[entity][created["Id"]])
                created = dict(realm.entities[entity][created["Id"]])
            if entity == "Payment":
                self._apply_payment(realm, obj)
            return {entity: created}
        stored = realm.entities[entity].get(str(qbo_id))
        if stored is None:
            return {"Fault": _not_found(entity, str(qbo_id))}
        if injection is not None and injection.kind == "stale":
            self._touch(stored)
        if str(obj.get("SyncToken")) != stored["SyncToken"]:
            detail = (
                "Stale Object Error : You and another user were working on this at the same "
                "time. The other user finished before you did, so your work was not saved."
            )
            return {"Fault": fault("ValidationFault", "5010", "Stale Object Error", detail)}
        if operation in ("delete", "void"):
            if operation == "delete":
                del realm.entities[entity][stored["Id"]]
                return {entity: {"Id": stored["Id"], "status": "Deleted", "domain": "QBO"}}
            stored.update(TotalAmt=0, Balance=0, PrivateNote="Voided")
        else:
            if not obj.get("sparse"):
                keep = {k: stored[k] for k in ("Id", "SyncToken", "MetaData", "domain")}
                stored.clear()
                stored.update(keep)
            stored.update({k: v for k, v in obj.items() if k not in ("SyncToken", "MetaData")})
        self._touch(stored)
        return {entity: dict(stored)}

    @staticmethod
    def _set_balance(invoice: dict[str, Any]) -> None:
        total = sum(
            (
                Decimal(str(line.get("Amount", 0)))
                for line in invoice.get("Line", [])
                if line.get("DetailType") != "SubTotalLineDetail"
            ),
            Decimal(0),
        )
        invoice.update(TotalAmt=float(total), Balance=float(total))

    def _apply_payment(self, realm: RealmState, payment: dict[str, Any]) -> None:
        """A payment's linked amounts lower the invoices' Balance, as QuickBooks does."""
        for line in payment.get("Line", []):
            for linked in line.get("LinkedTxn", []):
                invoice = realm.entities["Invoice"].get(str(linked.get("TxnId")))
                if invoice is not None and linked.get("TxnType") == "Invoice":
                    paid = Decimal(str(line.get("Amount", 0)))
                    invoice["Balance"] = float(Decimal(str(invoice["Balance"])) - paid)
                    self._touch(invoice)

    def _validate(
        self, realm: RealmState, entity: str, obj: dict[str, Any]
    ) -> dict[str, Any] | None:
        if entity == "Customer" and not obj.get("Id"):
            name = obj.get("DisplayName")
            if not name:
                return fault(
                    "ValidationFault",
                    "2020",
                    "Required param missing, need to supply the required value for the API",
                    "Required parameter DisplayName is missing in the request",
                )
            taken = any(c.get("DisplayName") == name for c in realm.entities["Customer"].values())
            if taken:
                return fault(
                    "ValidationFault",
                    "6240",
                    "Duplicate Name Exists Error",
                    f"The name supplied already exists. : {name}",
                )
        if entity == "JournalEntry":
            debit = credit = Decimal(0)
            for line in obj.get("Line", []):
                detail = line.get("JournalEntryLineDetail", {})
                ref = detail.get("AccountRef", {}).get("value")
                if ref not in realm.entities["Account"]:
                    return fault(
                        "ValidationFault",
                        "2500",
                        "Invalid Reference Id",
                        f"Invalid Reference Id : Accounts element id {ref} not found",
                    )
                amount = Decimal(str(line.get("Amount", 0)))
                if detail.get("PostingType") == "Debit":
                    debit += amount
                else:
                    credit += amount
            if debit != credit or debit == 0:
                return fault(
                    "ValidationFault",
                    "6000",
                    "A business validation error has occurred while processing your request",
                    "Business Validation Error: Your Journal Entry is unbalanced. "
                    "Please check your entries and try again.",
                )
        if entity in ("Invoice", "Payment"):
            ref = obj.get("CustomerRef", {}).get("value")
            if ref not in realm.entities["Customer"]:
                return fault(
                    "ValidationFault",
                    "2500",
                    "Invalid Reference Id",
                    f"Invalid Reference Id : Names element id {ref} not found",
                )
        return None

    def _batch(
        self, realm: RealmState, body: Any, injection: Injection | None
    ) -> tuple[int, dict[str, Any]]:
        items = body.get("BatchItemRequest") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items or len(items) > BATCH_MAX_ITEMS:
            detail = f"BatchItemRequest must hold 1 to {BATCH_MAX_ITEMS} items"
            return 400, {"Fault": fault("ValidationFault", "2010", "Invalid batch", detail)}
        answers = []
        for item in items:
            bid = item.get("bId")
            if "Query" in item:
                answers.append(
                    {
                        "bId": bid,
                        "QueryResponse": self._query(realm, item["Query"])["QueryResponse"],
                    }
                )
                continue
            entity = next((k for k in item if k in ENTITIES), None)
            if entity is None:
                answers.append(
                    {"bId": bid, "Fault": fault("ValidationFault", "2010", "No entity")}
                )
                continue
            operation = item.get("operation", "create")
            result = self._write(
                realm, entity, operation if operation != "update" else "", item[entity], injection
            )
            answers.append({"bId": bid, **result})
        return 200, {"BatchItemResponse": answers}

    def _query(self, realm: RealmState, text: str) -> dict[str, Any]:
        words = text.replace("\n", " ").split()
        lowered = [w.lower() for w in words]
        entity = (
            _entity_name(words[lowered.index("from") + 1].lower()) if "from" in lowered else None
        )
        rows = list(realm.entities[entity].values()) if entity else []
        if "where" in lowered and entity:
            # Only "Id = 'n'" and "Id in ('n', ...)" are understood, which is all the app asks.
            clause = " ".join(words[lowered.index("where") + 1 :])
            wanted = {part.strip(" ()'\"") for part in clause.split("=", 1)[-1].split(",")}
            if " in " in f" {clause.lower()} ":
                wanted = {p.strip(" ()'\"") for p in clause.lower().split(" in ", 1)[1].split(",")}
            rows = [r for r in rows if r["Id"] in wanted]
        response: dict[str, Any] = {"startPosition": 1, "maxResults": len(rows)}
        if rows and entity:
            response[entity] = [dict(r) for r in rows]
        return {"QueryResponse": response}

    def _cdc(self, realm: RealmState, query: dict[str, str]) -> dict[str, Any]:
        since = datetime.fromisoformat(query.get("changedSince", "1970-01-01T00:00:00+00:00"))
        groups = []
        for name in query.get("entities", "").split(","):
            entity = _entity_name(name.strip().lower())
            if entity is None:
                continue
            changed = [
                dict(r)
                for r in realm.entities[entity].values()
                if datetime.fromisoformat(r["MetaData"]["LastUpdatedTime"]) > since
            ]
            groups.append({entity: changed, "startPosition": 1, "maxResults": len(changed)})
        return {"CDCResponse": [{"QueryResponse": groups}]}

    def handle_token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            grant = form.get("grant_type")
            if grant == "authorization_code":
                realm_id = self.codes.pop(form.get("code", ""), None)
            elif grant == "refresh_token":
                realm_id = self.refresh_tokens.pop(form.get("refresh_token", ""), None)
                self.refreshes += 1
            else:
                return 400, {"error": "unsupported_grant_type"}
            if realm_id is None:
                return 400, {"error": "invalid_grant"}
            access, refresh = self._issue(realm_id)
            return 200, {
                "token_type": "bearer",
                "access_token": access,
                "refresh_token": refresh,
                "expires_in": self.access_token_ttl_s,
                "x_refresh_token_expires_in": 8726400,
            }

    def handle_revoke(self, token: str) -> int:
        with self.lock:
            self.revoked.append(token)
            self.refresh_tokens.pop(token, None)
            self.access_tokens.pop(token, None)
        return 200


def _entity_name(resource: str) -> str | None:
    return next((name for name in ENTITIES if name.lower() == resource), None)


def _not_found(entity: str, qbo_id: str) -> dict[str, Any]:
    detail = f"Object Not Found : Something you're trying to use has been made inactive. Check the fields with accounts, customers, items, vendors or employees. {entity} {qbo_id}"  # noqa: E501
    return fault("ValidationFault", "610", "Object Not Found", detail)


def _throttle_body() -> dict[str, Any]:
    message = "message=ThrottleExceeded; errorCode=003001; statusCode=429"
    return {
        "Fault": fault("ThrottlingFault", "003001", message, "The request limit was reached."),
        "time": _stamp(),
    }


def _retry_after(injection: Injection) -> dict[str, str]:
    return {"Retry-After": str(injection.retry_after_s)} if injection.retry_after_s else {}


def _discovery(fake: FakeQuickBooks) -> dict[str, Any]:
    return {
        "issuer": "https://oauth.platform.intuit.com/op/v1",
        "authorization_endpoint": f"{fake.base_url}/connect/oauth2",
        "token_endpoint": fake.token_url,
        "userinfo_endpoint": f"{fake.base_url}/v1/openid_connect/userinfo",
        "revocation_endpoint": fake.revoke_url,
        "jwks_uri": f"{fake.base_url}/op/v1/jwks",
    }


def _stamp() -> str:
    now = datetime.now(UTC) + timedelta(microseconds=0)
    return now.isoformat(timespec="microseconds")


def _handler(fake: FakeQuickBooks) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("intuit_tid", uuid.uuid4().hex)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _dispatch(self, method: str) -> None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            raw = self._body()
            if url.path == "/.well-known/openid_sandbox_configuration":
                self._send(200, _discovery(fake), {})
                return
            if url.path == "/oauth2/v1/tokens/bearer":
                form = {k: v[-1] for k, v in parse_qs(raw.decode()).items()}
                status, answer = fake.handle_token(form)
                self._send(status, answer, {})
                return
            if url.path == "/oauth2/v1/tokens/revoke":
                token = json.loads(raw or b"{}").get("token", "")
                self._send(fake.handle_revoke(token), {}, {})
                return
            auth = self.headers.get("Authorization", "")
            token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                self._send(400, {"Fault": fault("ValidationFault", "2010", "Invalid JSON")}, {})
                return
            status, answer, headers, delay = fake.handle_api(method, url.path, query, token, body)
            if delay:
                time.sleep(delay)
            # The client may have given up waiting (an injected timeout).
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self._send(status, answer, headers)

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

    return Handler
