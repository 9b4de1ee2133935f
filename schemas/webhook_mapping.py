"""Declarative mappings from a third party's webhook payload to a tokenyield ``Outcome``.

A mapping is a small YAML (or JSON) document; every outcome field is a JMESPath
expression over the payload, compiled once when the mapping is loaded::

    name: github-pull-requests
    when: "action == 'closed'"          # optional; payloads it rejects are ignored
    fields:
      event_id: "join('', ['gh-pr:', to_string(pull_request.id), ':', pull_request.closed_at])"
      work_unit_id: "join('', ['github:', repository.full_name, '#', to_string(number)])"
      occurred_at: pull_request.closed_at
      team: "'platform'"                # a JMESPath literal ...
      workflow: {literal: code-review}  # ... or an explicit one
      status:
        expr: pull_request.merged
        map: {true: accepted, false: rejected}

A field is an expression (a string), a literal (a number or boolean, or
``{literal: ...}``), or a table with these keys:

- ``expr`` or ``literal`` (exactly one);
- ``map``: the expression's value looked up in a table, e.g. a third party's states onto
  tokenyield's statuses (``{merged: accepted, closed: rejected}``). Keys and values are
  compared as JSON text, so a YAML mapping and its JSON twin (where keys are always
  strings) agree: the key ``true`` matches the boolean and the string "true", ``2``
  matches 2, 2.0 and "2". A value that is a list or an object is never in a map;
- ``default``: used when the expression gives null, or a value ``map`` lacks;
- ``required``: a null result is an error (always so for the contract's required
  fields: event_id, work_unit_id, occurred_at, team, workflow, status); an optional
  field that comes out null is left to the contract's default.

``when`` uses JMESPath truth: false, null, and empty strings, lists and objects are
false; every number, 0 included, is true.

Errors in the mapping itself (YAML, unknown keys or field names, expressions that do
not parse, unknown functions or wrong argument counts, literals the contract refuses)
raise ``WebhookMappingError`` at load time, naming the field and expression. On the
hot path nothing raises: ``apply`` returns a ``MappingResult`` with the outcome, or
``ignored``, or an error naming the field and the expression that failed.

Values are made to fit the contract where that is lossless: an integer for a text
field (``work_unit_id: pull_request.number``) becomes its decimal text; a JSON number
for money becomes the ``Decimal`` of its shortest round-trip text (``12.34`` stays
``12.34``; JSON itself carries no more precision than a double for such payloads).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import jmespath
import jmespath.exceptions
import jmespath.functions
import orjson
import yaml
from pydantic import TypeAdapter, ValidationError

from schemas.codec import explain
from schemas.errors import TokenyieldError
from schemas.events import Outcome


class WebhookMappingError(TokenyieldError):
    """A mapping file is unusable; ``fields`` name the mapping, field and expression."""


@dataclass(frozen=True, slots=True)
class MappingFailure:
    """Why one payload gave no outcome. ``field``/``expression`` are ``None`` when the
    problem is the payload as a whole (not JSON, not an object) or spans fields."""

    reason: str
    field: str | None = None
    expression: str | None = None


@dataclass(frozen=True, slots=True)
class MappingResult:
    """Exactly one of: an ``outcome``; ``ignored`` (the ``when`` filter said no); an
    ``error``. The caller counts ignored payloads (a metric, an HTTP 202)."""

    outcome: Outcome | None = None
    ignored: bool = False
    error: MappingFailure | None = None


_MISSING: Any = object()
_TOP_LEVEL_KEYS = frozenset({"name", "description", "when", "fields"})
_SPEC_KEYS = frozenset({"expr", "literal", "map", "default", "required"})
_MAPPABLE = {name: info for name, info in Outcome.model_fields.items()
             if name != "schema_version"}  # the contract version is not the sender's
_CONTRACT_REQUIRED = frozenset(n for n, info in _MAPPABLE.items() if info.is_required())
_TEXT_FIELDS = frozenset({"event_id", "work_unit_id", "team", "workflow"})
_DECIMAL_FIELDS = frozenset({"value", "human_review_minutes", "review_rate", "baseline_cost"})
_FIELD_TYPES = {name: TypeAdapter(Annotated[info.annotation, info])
                for name, info in _MAPPABLE.items()}
_FUNCTIONS = jmespath.functions.Functions().FUNCTION_TABLE


@dataclass(frozen=True, slots=True)
class _FieldRule:
    name: str
    expression: str | None  # the source text, for error messages
    compiled: Any  # jmespath ParsedResult, or None for a literal
    literal: Any
    table: Mapping[str, Any] | None
    default: Any
    required: bool

    def evaluate(self, payload: Any) -> tuple[Any, MappingFailure | None]:
        if self.compiled is None:
            return self.literal, None
        try:
            found = self.compiled.search(payload)
        except jmespath.exceptions.JMESPathError as exc:
            return None, self.failure(f"expression failed on this payload: {exc}")
        value = found
        if found is not None and self.table is not None:
            value = self.table.get(_map_key(found), _MISSING)  # type: ignore[arg-type]
            if value is _MISSING and self.default is _MISSING:
                known = ", ".join(repr(key) for key in self.table)
                return None, self.failure(f"value {found!r} is not in its map ({known})")
        if value is None or value is _MISSING:
            value = None if self.default is _MISSING else self.default
        if value is None and self.required:
            return None, self.failure("gave null and the field is required")
        return _fit(self.name, value), None

    def failure(self, reason: str) -> MappingFailure:
        where = f"`{self.expression}`" if self.expression is not None else "literal"
        return MappingFailure(f"{self.name} (from {where}): {reason}", self.name,
                              self.expression)

    def describe(self) -> str:
        if self.expression is None:
            return f"literal {self.literal!r}"
        return f"`{self.expression}`"


@dataclass(frozen=True, slots=True)
class WebhookMapping:
    """One compiled mapping; build it with ``load_mapping`` or ``parse_mapping``."""

    name: str
    description: str
    when: str | None
    rules: tuple[_FieldRule, ...]
    _when: Any = None

    def apply(self, payload: Any) -> MappingResult:
        """The outcome for one decoded payload; never raises on bad data."""
        if not isinstance(payload, dict):
            return MappingResult(error=MappingFailure(
                f"payload must be a JSON object, got {type(payload).__name__}"))
        if self._when is not None:
            try:
                selected = _truthy(self._when.search(payload))
            except jmespath.exceptions.JMESPathError as exc:
                return MappingResult(error=MappingFailure(
                    f"when (from `{self.when}`): expression failed on this payload: {exc}",
                    "when", self.when))
            if not selected:
                return MappingResult(ignored=True)
        values: dict[str, Any] = {}
        for rule in self.rules:
            value, failure = rule.evaluate(payload)
            if failure is not None:
                return MappingResult(error=failure)
            if value is not None:
                values[rule.name] = value
        try:
            return MappingResult(outcome=Outcome.model_validate(values))
        except ValidationError as exc:
            return MappingResult(error=self._invalid(exc))

    def apply_json(self, data: bytes) -> MappingResult:
        """The outcome for one raw request body."""
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            return MappingResult(error=MappingFailure(f"payload is not JSON: {exc}"))
        return self.apply(payload)

    def _invalid(self, error: ValidationError) -> MappingFailure:
        rules = {rule.name: rule for rule in self.rules}
        parts, fields = [], []
        for item in error.errors(include_url=False, include_input=False):
            name = str(item["loc"][0]) if item["loc"] else None
            message = item["msg"].removeprefix("Value error, ")
            if name in rules:
                fields.append(name)
                parts.append(f"{name} (from {rules[name].describe()}): {message}")
            else:
                parts.append(f"{name or 'outcome'}: {message}")
        only = rules[fields[0]] if len(fields) == 1 == len(parts) else None
        return MappingFailure("; ".join(parts), only.name if only else None,
                              only.expression if only else None)


# -- loading -----------------------------------------------------------------------------


def load_mapping(path: str | Path) -> WebhookMapping:
    """Read and compile one mapping file (YAML; JSON is YAML too)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WebhookMappingError(f"cannot read webhook mapping {path}: {exc}",
                                  source=str(path)) from exc
    return parse_mapping(text, source=str(path))


def load_mappings(directory: str | Path) -> dict[str, WebhookMapping]:
    """Every ``*.yaml``/``*.yml``/``*.json`` mapping in a directory, by name."""
    mappings: dict[str, WebhookMapping] = {}
    for path in sorted(Path(directory).iterdir()):
        if path.suffix not in (".yaml", ".yml", ".json"):
            continue
        mapping = load_mapping(path)
        if mapping.name in mappings:
            raise WebhookMappingError(
                f"two webhook mappings are named {mapping.name!r} (in {directory})",
                mapping=mapping.name, source=str(path))
        mappings[mapping.name] = mapping
    return mappings


def parse_mapping(document: str | Mapping[str, Any], source: str = "<mapping>") -> WebhookMapping:
    """Compile a mapping from its text or an already loaded document."""
    if isinstance(document, str):
        try:
            document = yaml.safe_load(document)
        except yaml.YAMLError as exc:
            raise WebhookMappingError(f"{source}: not YAML: {exc}", source=source) from exc
    if not isinstance(document, Mapping):
        raise WebhookMappingError(f"{source}: a mapping must be a YAML object with name "
                                  "and fields", source=source)
    unknown = sorted(set(document) - _TOP_LEVEL_KEYS, key=str)
    if unknown:
        raise WebhookMappingError(f"{source}: unknown keys {unknown}; allowed: "
                                  f"{sorted(_TOP_LEVEL_KEYS)}", source=source)
    name = document.get("name")
    if not isinstance(name, str) or not name.strip():
        raise WebhookMappingError(f"{source}: 'name' must be non-empty text", source=source)
    context = {"source": source, "mapping": name}
    when = document.get("when")
    if when is not None and not isinstance(when, str):
        raise WebhookMappingError(f"{source}: 'when' must be a JMESPath expression (text)",
                                  field="when", **context)
    fields = document.get("fields")
    if not isinstance(fields, Mapping) or not fields:
        raise WebhookMappingError(f"{source}: 'fields' must map outcome fields to "
                                  "expressions", **context)
    _check_field_names(fields, source, context)
    rules = tuple(_rule(str(field), spec, source, context) for field, spec in fields.items())
    description = document.get("description") or ""
    return WebhookMapping(
        name=name, description=str(description), when=when, rules=rules,
        _when=None if when is None else _compile("when", when, source, context))


def _check_field_names(fields: Mapping[Any, Any], source: str, context: dict[str, str]) -> None:
    for field in fields:
        if field not in _MAPPABLE:
            close = difflib.get_close_matches(str(field), list(_MAPPABLE), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise WebhookMappingError(
                f"{source}: {field!r} is not an Outcome field{hint}; fields: "
                f"{', '.join(_MAPPABLE)}", field=str(field), **context)
    missing = sorted(_CONTRACT_REQUIRED - set(fields))
    if missing:
        raise WebhookMappingError(
            f"{source}: the contract requires {', '.join(missing)}; map them (a literal "
            "will do)", missing=missing, **context)


def _rule(field: str, spec: Any, source: str, context: dict[str, str]) -> _FieldRule:
    if isinstance(spec, str):
        spec = {"expr": spec}
    elif not isinstance(spec, Mapping):
        spec = {"literal": spec}
    unknown = sorted(set(spec) - _SPEC_KEYS, key=str)
    if unknown:
        raise WebhookMappingError(f"{source}: {field}: unknown keys {unknown}; allowed: "
                                  f"{sorted(_SPEC_KEYS)}", field=field, **context)
    if ("expr" in spec) == ("literal" in spec):
        raise WebhookMappingError(f"{source}: {field}: give exactly one of expr and literal",
                                  field=field, **context)
    expression = spec.get("expr")
    if expression is not None and not isinstance(expression, str):
        raise WebhookMappingError(f"{source}: {field}: expr must be text",
                                  field=field, **context)
    required = spec.get("required", field in _CONTRACT_REQUIRED)
    if not isinstance(required, bool):
        raise WebhookMappingError(f"{source}: {field}: required must be true or false",
                                  field=field, **context)
    if field in _CONTRACT_REQUIRED and not required:
        raise WebhookMappingError(f"{source}: {field} is required by the contract; it "
                                  "cannot be optional", field=field, **context)
    table = _table(field, spec.get("map"), expression, source, context)
    literal = spec.get("literal", _MISSING)
    default = spec.get("default", _MISSING)
    for label, value in (("literal", literal), ("default", default)):
        if value is not _MISSING and value is not None:
            _check_value(field, label, value, source, context)
    if literal is None and field in _CONTRACT_REQUIRED:
        raise WebhookMappingError(f"{source}: {field}: a null literal for a required field",
                                  field=field, **context)
    return _FieldRule(
        name=field, expression=expression,
        compiled=None if expression is None else _compile(field, expression, source, context),
        literal=None if literal is _MISSING else _fit(field, literal), table=table,
        default=default if default is _MISSING or default is None else _fit(field, default),
        required=required)


def _table(field: str, table: Any, expression: str | None, source: str,
           context: dict[str, str]) -> Mapping[str, Any] | None:
    if table is None:
        return None
    if expression is None:
        raise WebhookMappingError(f"{source}: {field}: map needs an expr to look up",
                                  field=field, **context)
    if not isinstance(table, Mapping) or not table:
        raise WebhookMappingError(f"{source}: {field}: map must be a non-empty table",
                                  field=field, expression=expression, **context)
    by_text: dict[str, Any] = {}
    for key, value in table.items():
        text = _map_key(key)
        if text is None:
            raise WebhookMappingError(f"{source}: {field}: map keys must be text, numbers "
                                      f"or booleans, not {key!r}", field=field, **context)
        if text in by_text:
            raise WebhookMappingError(f"{source}: {field}: map keys {key!r} and another "
                                      f"both read as {text!r}", field=field, **context)
        _check_value(field, f"map value for {key!r}", value, source, context)
        by_text[text] = _fit(field, value)
    return by_text


def _check_value(field: str, label: str, value: Any, source: str,
                 context: dict[str, str]) -> None:
    try:
        _FIELD_TYPES[field].validate_python(_fit(field, value))
    except ValidationError as exc:
        message = explain(exc)
        raise WebhookMappingError(f"{source}: {field}: {label} {value!r} is not valid "
                                  f"for the contract: {message}", field=field, **context) from exc


def _compile(field: str, expression: str, source: str, context: dict[str, str]) -> Any:
    try:
        compiled = jmespath.compile(expression)
    except jmespath.exceptions.JMESPathError as exc:
        raise WebhookMappingError(f"{source}: {field}: `{expression}` is not JMESPath: {exc}",
                                  field=field, expression=expression, **context) from exc
    # jmespath reports unknown functions and wrong argument counts only when it runs;
    # check them here so that a typo fails at load, not on the first real payload.
    for function, arguments in _function_calls(compiled.parsed):
        problem = _call_problem(function, arguments)
        if problem:
            raise WebhookMappingError(f"{source}: {field}: `{expression}`: {problem}",
                                      field=field, expression=expression, **context)
    return compiled


def _function_calls(node: Any) -> Iterator[tuple[str, int]]:
    if isinstance(node, dict):
        if node.get("type") == "function_expression":
            yield node["value"], len(node.get("children", []))
        for child in node.get("children", []):
            yield from _function_calls(child)
    elif isinstance(node, list):
        for child in node:
            yield from _function_calls(child)


def _call_problem(function: str, arguments: int) -> str:
    if function not in _FUNCTIONS:
        return f"unknown function {function}()"
    signature = _FUNCTIONS[function]["signature"]
    if signature and signature[-1].get("variadic"):
        if arguments < len(signature):
            return f"{function}() takes at least {len(signature)} arguments, got {arguments}"
    elif arguments != len(signature):
        return f"{function}() takes {len(signature)} arguments, got {arguments}"
    return ""


# -- values ------------------------------------------------------------------------------


def _map_key(value: Any) -> str | None:
    """A scalar as JSON text (``true``, ``2``), the form map keys are compared in.
    Python alone would find ``True == 1`` and ``"2" != 2``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        number = Decimal(str(value))
        return format(number.normalize(), "f") if number.is_finite() else None
    if isinstance(value, str):
        return value
    return None


def _truthy(value: Any) -> bool:
    if value is None or value is False:
        return False
    if isinstance(value, str | list | dict):
        return len(value) > 0
    return True


def _fit(field: str, value: Any) -> Any:
    if field in _TEXT_FIELDS and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if field in _DECIMAL_FIELDS and isinstance(value, float):
        return Decimal(repr(value))  # shortest text that round-trips: 12.34, not 12.339...
    return value


__all__ = [
    "MappingFailure",
    "MappingResult",
    "WebhookMapping",
    "WebhookMappingError",
    "load_mapping",
    "load_mappings",
    "parse_mapping",
]
