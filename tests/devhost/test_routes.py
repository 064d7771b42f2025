"""Route templates: parameters, optional and catch-all segments, constraints, precedence."""

from __future__ import annotations

import pytest

from devhost.errors import ConfigError
from devhost.routes import RouteTemplate


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("hello/{name}", "hello/ada", {"name": "ada"}),
        ("hello/{name}", "hello", None),
        ("hello/{name?}", "hello", {}),
        ("hello/{name?}", "hello/ada/", {"name": "ada"}),
        (
            "clients/{client_id}/documents/{doc}",
            "clients/c1/documents/d2",
            {"client_id": "c1", "doc": "d2"},
        ),
        ("items/{id:int}", "items/-12", {"id": "-12"}),
        ("items/{id:int}", "items/1.5", None),
        ("items/{id:int:min(10)}", "items/9", None),
        ("items/{id:range(1,5)}", "items/5", {"id": "5"}),
        ("items/{id:alpha}", "items/abc", {"id": "abc"}),
        ("items/{id:guid}", "items/nope", None),
        ("codes/{code:regex(^[A-Z]{{3}}$)}", "codes/USD", {"code": "USD"}),
        ("codes/{code:regex(^[A-Z]{{3}}$)}", "codes/USDX", None),
        ("codes/{code:somethingcustom}", "codes/any", {"code": "any"}),
        ("files/{*path}", "files/a/b/c.txt", {"path": "a/b/c.txt"}),
        ("files/{*path}", "files", {}),
        ("files/{name}.{ext}", "files/report.final.pdf", {"name": "report.final", "ext": "pdf"}),
        ("page/{n=1}", "page", {"n": "1"}),
        ("", "", {}),
    ],
)
def test_template_matching(template, path, expected):
    assert RouteTemplate.parse(template).match(path) == expected


def test_literal_beats_parameter_beats_catch_all():
    literal = RouteTemplate.parse("items/special")
    param = RouteTemplate.parse("items/{id}")
    catch_all = RouteTemplate.parse("items/{*rest}")
    assert sorted([catch_all, param, literal], key=lambda t: t.precedence) == [
        literal,
        param,
        catch_all,
    ]


def test_unbalanced_braces_are_rejected():
    with pytest.raises(ConfigError, match="unclosed"):
        RouteTemplate.parse("items/{id")
