"""``python -m tests.portal.portal_requests <token> <count>``: a process of its own that sends
``count`` requests to the portal's functions, as another instance of the app would, and
prints their statuses and Retry-After values as JSON."""

from __future__ import annotations

import json
import sys

import azure.functions as func


def main() -> None:
    from functions import portal as api

    token, count = sys.argv[1], int(sys.argv[2])
    answers = []
    for _ in range(count):
        request = func.HttpRequest(
            "GET", "/api/v1/clients", headers={"Authorization": f"Bearer {token}"}, body=b""
        )
        response = api.dispatch(request, "v1/clients")
        answers.append([response.status_code, response.headers.get("Retry-After")])
    print(json.dumps(answers))


if __name__ == "__main__":
    main()
