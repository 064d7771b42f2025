"""Starting an engagement and deciding its reviews through the portal: what is written, what
the workflow is asked, and what is refused (the whole walk runs in tests/e2e)."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from tests.portal.conftest import make_user, owner_conn, send
from tests.portal.workflow_support import WorkflowHost

START = {"engagement_type": "individual_tax_return", "period": "2026"}


def _rows(services: dict[str, str], sql: str, *params: object) -> list[tuple[object, ...]]:
    with owner_conn(services) as conn:
        return conn.execute(sql, params).fetchall()


def test_starting_twice_answers_the_same_engagement_and_instance(
    services: dict[str, str],
    portal: None,
    workflows: WorkflowHost,
    firm: uuid.UUID,
    client_id: uuid.UUID,
) -> None:
    from shared.services import engagements

    advisor = make_user(firm, "advisor")
    path = f"v1/clients/{client_id}/engagements"

    first = send("POST", path, advisor.token, body=START)
    again = send("POST", path, advisor.token, body=START)

    expected = engagements.engagement_id_for(client_id, "individual_tax_return", "2026")
    assert first.status == again.status == 202, first.body
    assert first.json()["id"] == again.json()["id"] == str(expected)
    assert first.json()["instance_id"] == again.json()["instance_id"] == f"engagement-{expected}"
    assert (first.json()["created"], again.json()["created"]) == (True, False)
    assert first.json()["status"] == "open"
    assert _rows(services, "SELECT count(*) FROM engagements WHERE client_id = %s", client_id) == [
        (1,)
    ]
    assert _rows(
        services,
        "SELECT actor, action, subject FROM audit_log WHERE client_id = %s"
        " AND action LIKE 'engagement.%%'",
        client_id,
    ) == [(f"user:{advisor.id}", "engagement.opened", str(expected))]
    instance = workflows.status(f"engagement-{expected}")
    assert instance["name"] == "engagement_v1"
    assert instance["input"] == {"engagement_id": str(expected)}


def test_a_start_with_an_unknown_type_names_the_field_and_writes_nothing(
    services: dict[str, str], portal: None, firm: uuid.UUID, client_id: uuid.UUID
) -> None:
    advisor = make_user(firm, "firm_admin")

    answer = send(
        "POST",
        f"v1/clients/{client_id}/engagements",
        advisor.token,
        body={"engagement_type": "audit", "period": "2026"},
    )

    assert answer.status == 400
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["errors"][0]["field"] == "engagement_type"
    assert answer.json()["detail"].startswith("field 'engagement_type': Input should be")
    assert _rows(services, "SELECT id FROM engagements WHERE client_id = %s", client_id) == []


def test_a_rejection_without_a_comment_names_the_comment(
    portal: None, firm: uuid.UUID, client_id: uuid.UUID
) -> None:
    advisor = make_user(firm, "advisor")
    started = send("POST", f"v1/clients/{client_id}/engagements", advisor.token, body=START)

    answer = send(
        "POST",
        f"v1/clients/{client_id}/engagements/{started.json()['id']}/review",
        advisor.token,
        body={"step": "preparer_review", "decision": "reject"},
    )

    assert answer.status == 400
    assert answer.json()["detail"] == (
        "field 'comment': a rejection needs a comment saying what to fix"
    )


def test_a_decision_while_no_review_waits_is_a_conflict_and_is_not_audited(
    services: dict[str, str], portal: None, firm: uuid.UUID, client_id: uuid.UUID
) -> None:
    advisor = make_user(firm, "advisor")
    started = send("POST", f"v1/clients/{client_id}/engagements", advisor.token, body=START)
    engagement = started.json()["id"]

    answer = send(
        "POST",
        f"v1/clients/{client_id}/engagements/{engagement}/review",
        advisor.token,
        body={"step": "preparer_review", "decision": "approve"},
    )

    assert answer.status == 409
    assert answer.json()["detail"] == f"engagement {engagement} is not waiting for a review"
    assert (
        _rows(
            services,
            "SELECT action FROM audit_log WHERE client_id = %s"
            " AND action LIKE 'engagement.review%%'",
            client_id,
        )
        == []
    )


def test_the_api_role_may_insert_only_the_engagements_of_its_client(
    services: dict[str, str], portal: None, firm: uuid.UUID, client_id: uuid.UUID
) -> None:
    from shared.adapters import postgres
    from shared.services import clients

    other = clients.create_client(firm, "Other")
    user = uuid.uuid4()
    with (
        postgres.scoped_transaction(firm_id=firm, client_id=client_id, user_id=user) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"),
    ):
        conn.execute(
            "INSERT INTO engagements (id, client_id, engagement_type, period, instance_id,"
            " fee_minor, currency) VALUES (gen_random_uuid(), %s, 'advisory_project',"
            " '2026', 'x', 1, 'USD')",
            (other,),
        )
