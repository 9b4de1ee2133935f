"""Parameterized views inlined into the views that call them, when migrations run.

ClickHouse analyses every call of a parameterized view afresh, and the cost grows with
the depth of the calls: measured on chdb 26.9, a chain of trivial views costs about
3 ms a level, a view called from both halves of a UNION ALL twice that, and the
deciles panel (five levels, eleven calls) spent 180 of its 216 ms in analysis over a
range with no rows at all. The same SQL written as nested subqueries costs a third.

So a migration can ask for views to be flattened with a statement of its own:

    INLINE VIEWS {db}.v_units_since, {db}.v_acceptance_by_cost_decile_since;

The runner turns it into ``CREATE OR REPLACE VIEW`` statements, one per view, whose
body is the view's body as the migrations before define it, with every call of a
parameterized view in it (``{db}.name(param = value, ...)``) replaced by that view's
body in parentheses, its ``{param:Type}`` placeholders replaced by the values, and so
on down. The figures do not change: a call of a parameterized view is that
substitution; the views are written so the scalar subqueries they share stay the same
text once inlined (ClickHouse computes each distinct one once per query).

**What can go stale.** An inlined view holds a copy of the bodies it called. A later
migration that redefines one of them must inline the callers again (another ``INLINE
VIEWS``), or they would keep the old body: ``migration_statements`` checks this over
all migrations and raises a StorageError naming both views and the file. Tests call
it, so a migration that forgets fails CI before it reaches a database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from schemas.errors import StorageError
from streams.clickhouse.cluster import SQL_TOKEN

_INLINE = re.compile(r"^\s*INLINE\s+VIEWS\s+(?P<names>.*?)\s*;?\s*$", re.IGNORECASE | re.DOTALL)
_VIEW_NAME = re.compile(r"^\{db\}\.([A-Za-z_][A-Za-z0-9_]*)$")
_CREATE_VIEW = re.compile(
    r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?VIEW\s+(?:IF\s+NOT\s+EXISTS\s+)?"
    r"\{db\}\.([A-Za-z_][A-Za-z0-9_]*)\s+AS\s+(?P<body>.*?)\s*;?\s*$",
    re.IGNORECASE | re.DOTALL)
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*):[^{}]*\}")


@dataclass
class _View:
    body: str  # as written, comments removed
    defined: str  # "<file>, statement <n>": where this body was written
    order: int  # statements seen before that one, over all migrations
    inlined: dict[str, int] = field(default_factory=dict)  # view -> order of its copy
    inlined_at: str = ""  # where INLINE VIEWS last flattened it


@dataclass
class ViewCatalog:
    """The views the statements seen so far define, to inline and to check."""

    views: dict[str, _View] = field(default_factory=dict)
    seen: int = 0

    def statements(self, statements: list[str], source: str) -> list[str]:
        """``statements`` with each ``INLINE VIEWS`` expanded; records every view."""
        out = []
        for number, statement in enumerate(statements, start=1):
            self.seen += 1
            where = f"{source}, statement {number}"
            text = _without_comments(statement)
            inline = _INLINE.match(text)
            if inline is None:
                created = _CREATE_VIEW.match(text)
                if created is not None:
                    self.views[created.group(1)] = _View(created.group("body"), where,
                                                         self.seen)
                out.append(statement)
                continue
            for name in _names(inline.group("names"), where):
                view = self.views.get(name)
                if view is None:
                    raise StorageError(f"{where}: INLINE VIEWS names {name}, which no "
                                       f"earlier statement creates", view=name,
                                       migration=source)
                # The body is unchanged (only flattened): views that inlined this one
                # before hold the same text and stay current.
                view.inlined, view.inlined_at = {}, where
                body = self._expand(view.body, view.inlined, [name])
                out.append(f"CREATE OR REPLACE VIEW {{db}}.{name} AS\n{body}")
        return out

    def check(self) -> None:
        """Fail if a view inlines a copy of a body that a later statement redefined."""
        for name, view in self.views.items():
            for called, order in view.inlined.items():
                latest = self.views[called]
                if latest.order != order:
                    raise StorageError(
                        f"{name} (inlined at {view.inlined_at}) holds the old body of "
                        f"{called}, redefined at {latest.defined}: add INLINE VIEWS "
                        f"{{db}}.{name} after it", view=name, inlined=called,
                        migration=latest.defined)

    def _expand(self, body: str, inlined: dict[str, int], path: list[str]) -> str:
        """``body`` with every call of a known parameterized view replaced by its body."""
        pieces: list[str] = []
        position = 0
        for call in re.finditer(r"\{db\}\.([A-Za-z_][A-Za-z0-9_]*)\s*\(", body):
            if call.start() < position:
                continue  # inside a call already replaced
            name = call.group(1)
            view = self.views.get(name)
            if view is None or not _PLACEHOLDER.search(view.body):
                continue  # a table, a table function's name, or a plain view
            if name in path:
                raise StorageError(f"views call each other: {' -> '.join([*path, name])}",
                                   view=name)
            close = _closing(body, call.end() - 1)
            arguments = _arguments(body[call.end():close], name)
            inlined[name] = view.order
            inner = self._expand(view.body, inlined, [*path, name])
            pieces += [body[position:call.start()], "(", _bind(inner, arguments, name), ")"]
            position = close + 1
        return "".join(pieces) + body[position:]


def _without_comments(sql: str) -> str:
    """``sql`` without ``--`` and ``/* */`` comments (strings kept as they are), so that
    a body inlined into one line of another cannot comment out what follows it."""
    return "".join(" " if m.lastgroup == "comment" else m.group()
                   for m in SQL_TOKEN.finditer(sql))


def _names(text: str, where: str) -> list[str]:
    names = []
    for item in text.split(","):
        match = _VIEW_NAME.match(item.strip())
        if match is None:
            raise StorageError(f"{where}: INLINE VIEWS takes {{db}}.name, ... "
                               f"(got {item.strip()!r})", migration=where)
        names.append(match.group(1))
    return names


def _closing(sql: str, open_at: int) -> int:
    """The index of the parenthesis closing the one at ``open_at`` (strings skipped)."""
    depth = 0
    for match in SQL_TOKEN.finditer(sql, open_at):
        text = match.group()
        if match.lastgroup == "punct" and text == "(":
            depth += 1
        elif match.lastgroup == "punct" and text == ")":
            depth -= 1
            if depth == 0:
                return match.start()
    raise StorageError("a view call's parenthesis is never closed", excerpt=sql[open_at:80])


def _arguments(text: str, name: str) -> dict[str, str]:
    """``a = expr, b = expr`` (commas inside brackets and strings are not separators)."""
    parts, depth, start = [], 0, 0
    for match in SQL_TOKEN.finditer(text):
        value = match.group()
        if match.lastgroup != "punct":
            continue
        if value in "([":
            depth += 1
        elif value in ")]":
            depth -= 1
        elif value == "," and depth == 0:
            parts.append(text[start:match.start()])
            start = match.end()
    parts.append(text[start:])
    arguments = {}
    for part in parts:
        key, equals, value = part.partition("=")
        if not equals or not key.strip().isidentifier():
            raise StorageError(f"a call of {name} passes {part.strip()!r}, not param = value",
                               view=name)
        arguments[key.strip()] = value.strip()
    return arguments


def _bind(body: str, arguments: dict[str, str], name: str) -> str:
    def value(match: re.Match[str]) -> str:
        if match.group(1) not in arguments:
            raise StorageError(f"a call of {name} does not pass {match.group(1)}",
                               view=name, parameter=match.group(1))
        return arguments[match.group(1)]
    return _PLACEHOLDER.sub(value, body)
