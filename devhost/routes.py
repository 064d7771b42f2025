"""HTTP route templates as the Functions host reads them: ``{name}``, ``{id:int}``, ``{x?}``.

Literal segments match without regard to case and win over parameters, as in ASP.NET routing.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from devhost.discovery import FunctionSpec
from devhost.errors import ConfigError

log = logging.getLogger(__name__)

_INT = re.compile(r"-?\d+")
_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?")
_ALPHA = re.compile(r"[A-Za-z]+")


def _parse_datetime(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _parse_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


_SIMPLE_CONSTRAINTS: dict[str, Callable[[str], bool]] = {
    "int": lambda v: bool(_INT.fullmatch(v)),
    "long": lambda v: bool(_INT.fullmatch(v)),
    "bool": lambda v: v.lower() in ("true", "false"),
    "alpha": lambda v: bool(_ALPHA.fullmatch(v)),
    "decimal": lambda v: bool(_NUMBER.fullmatch(v)),
    "double": lambda v: bool(_NUMBER.fullmatch(v)),
    "float": lambda v: bool(_NUMBER.fullmatch(v)),
    "guid": _parse_guid,
    "datetime": _parse_datetime,
}


def _constraint(text: str) -> Callable[[str], bool] | None:
    """A predicate for one constraint; None (accept anything) for those not known here."""
    name, _, arg = text.partition("(")
    arg = arg[:-1] if arg.endswith(")") else arg
    name = name.strip().lower()
    if name in _SIMPLE_CONSTRAINTS:
        return _SIMPLE_CONSTRAINTS[name]
    if name == "regex":
        pattern = re.compile(arg, re.IGNORECASE)
        return lambda v: pattern.search(v) is not None
    numbers = [int(n) for n in re.findall(r"-?\d+", arg)]
    if name == "minlength" and numbers:
        return lambda v: len(v) >= numbers[0]
    if name == "maxlength" and numbers:
        return lambda v: len(v) <= numbers[0]
    if name == "length" and numbers:
        lo, hi = (numbers[0], numbers[0]) if len(numbers) == 1 else (numbers[0], numbers[1])
        return lambda v: lo <= len(v) <= hi
    if name in ("min", "max", "range") and numbers:
        low = numbers[0] if name != "max" else None
        high = numbers[-1] if name != "min" else None
        return lambda v: bool(_INT.fullmatch(v)) and _within(int(v), low, high)
    # Limitation: other route constraints (custom ones, "required", "file") are accepted
    # but not checked, so such a route may match values the real host would refuse.
    log.debug("route constraint %r is not checked by the devhost", text)
    return None


def _within(value: int, lo: int | None, hi: int | None) -> bool:
    return (lo is None or value >= lo) and (hi is None or value <= hi)


@dataclass(frozen=True, slots=True)
class _Param:
    name: str
    group: str
    optional: bool
    catch_all: bool
    default: str | None
    checks: tuple[Callable[[str], bool], ...]


@dataclass(frozen=True)
class RouteTemplate:
    """A compiled route template; ``match`` returns its route parameters or None."""

    template: str
    regex: re.Pattern[str]
    params: tuple[_Param, ...]
    precedence: tuple[int, ...]

    @classmethod
    def parse(cls, template: str) -> RouteTemplate:
        """Compile ``template`` (without the ``api/`` prefix).

        Raises:
            ConfigError: the template has unbalanced braces or an empty parameter.
        """
        stripped = template.strip().strip("/")
        params: list[_Param] = []
        precedence: list[int] = []
        pattern = ""
        for index, segment in enumerate(stripped.split("/") if stripped else []):
            seg_pattern, seg_params, rank, may_lack = _segment(segment, len(params), template)
            params += seg_params
            precedence.append(rank)
            sep = "/" if index else ""
            if may_lack:
                pattern += f"(?:{sep}{seg_pattern})?"
            else:
                pattern += sep + seg_pattern
        return cls(
            template=stripped,
            regex=re.compile(f"^{pattern}$", re.IGNORECASE),
            params=tuple(params),
            precedence=tuple(precedence),
        )

    def match(self, path: str) -> dict[str, str] | None:
        """Route parameters of ``path`` (no prefix, no leading slash), or None."""
        found = self.regex.match(path.strip("/"))
        if found is None:
            return None
        values: dict[str, str] = {}
        for param in self.params:
            value = found.group(param.group)
            if value is None or value == "":
                if param.default is not None:
                    values[param.name] = param.default
                continue
            if not all(check(value) for check in param.checks):
                return None
            values[param.name] = value
        return values


def _split_tokens(segment: str, template: str) -> list[tuple[bool, str]]:
    """Split a segment into (is_param, text) tokens, honouring ``{{`` and ``}}`` escapes."""
    tokens: list[tuple[bool, str]] = []
    literal = ""
    i = 0
    while i < len(segment):
        ch = segment[i]
        if segment.startswith("{{", i) or segment.startswith("}}", i):
            literal += ch
            i += 2
            continue
        if ch == "{":
            depth, j = 1, i + 1
            while j < len(segment) and depth:
                depth += {"{": 1, "}": -1}.get(segment[j], 0)
                j += 1
            if depth:
                raise ConfigError(f"route {template!r} has an unclosed '{{'")
            if literal:
                tokens.append((False, literal))
                literal = ""
            tokens.append((True, segment[i + 1 : j - 1]))
            i = j
            continue
        if ch == "}":
            raise ConfigError(f"route {template!r} has an unmatched '}}'")
        literal += ch
        i += 1
    if literal:
        tokens.append((False, literal))
    return tokens


def _segment(segment: str, offset: int, template: str) -> tuple[str, list[_Param], int, bool]:
    """Pattern, parameters, precedence rank and whether the whole segment may be absent."""
    tokens = _split_tokens(segment, template)
    pattern = ""
    params: list[_Param] = []
    for is_param, text in tokens:
        if not is_param:
            pattern += re.escape(text)
            continue
        param = _param(text, f"p{offset + len(params)}", template)
        params.append(param)
        body = ".*" if param.catch_all else "[^/]+"
        group = f"(?P<{param.group}>{body})"
        may_lack = param.optional or param.catch_all or param.default is not None
        pattern += f"(?:{group})?" if may_lack and len(tokens) > 1 else group
    if not params:
        return pattern, params, 0, False
    if len(tokens) > 1:
        return pattern, params, 1, False
    only = params[0]
    if only.catch_all:
        return pattern, params, 5, True
    if only.optional or only.default is not None:
        return pattern, params, 4, True
    return pattern, params, 2 if only.checks else 3, False


def _param(text: str, group: str, template: str) -> _Param:
    catch_all = text.startswith("*")
    text = text.lstrip("*")
    default: str | None = None
    if "=" in text:
        text, default = text.split("=", 1)
    optional = text.endswith("?")
    text = text.rstrip("?")
    name, *constraints = text.replace("{{", "{").replace("}}", "}").split(":")
    if not name:
        raise ConfigError(f"route {template!r} has a parameter without a name")
    checks = tuple(c for c in (_constraint(x) for x in constraints) if c is not None)
    return _Param(name, group, optional, catch_all, default, checks)


@dataclass(frozen=True)
class Route:
    """One HTTP function reachable under a template, for some methods, at an auth level."""

    template: RouteTemplate
    function: FunctionSpec
    methods: frozenset[str] | None
    auth_level: str


@dataclass(frozen=True)
class Resolution:
    """What ``RouteTable.resolve`` found: a route and its parameters, or the allowed methods."""

    route: Route | None
    params: Mapping[str, str] = field(default_factory=dict)
    allowed: frozenset[str] = frozenset()


class RouteTable:
    """Every HTTP route of the app, tried from the most to the least specific."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self._routes = sorted(routes, key=lambda r: r.template.precedence)
        seen: dict[str, Route] = {}
        for route in self._routes:
            key = route.template.template.lower()
            other = seen.setdefault(key, route)
            overlap = other is not route and (
                route.methods is None or other.methods is None or route.methods & other.methods
            )
            if overlap:
                log.warning(
                    "functions %s and %s share the route %r; %s wins",
                    other.function.name,
                    route.function.name,
                    route.template.template,
                    other.function.name,
                )

    def __iter__(self) -> Iterator[Route]:
        return iter(self._routes)

    def resolve(self, path: str, method: str) -> Resolution | None:
        """Find the route for ``path`` and ``method``.

        Returns:
            None when no template matches; a ``Resolution`` without a route but with the
            allowed methods when templates match but none takes ``method``.
        """
        allowed: set[str] = set()
        for route in self._routes:
            params = route.template.match(path)
            if params is None:
                continue
            if route.methods is None or method.upper() in route.methods:
                return Resolution(route, params)
            allowed |= route.methods
        if allowed:
            return Resolution(None, allowed=frozenset(allowed))
        return None
