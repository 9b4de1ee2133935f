"""The clustered variant of the migrations: the same files, transformed statement by
statement when ``TOKENYIELD_CLICKHOUSE_CLUSTER`` names a cluster.

There is one source of truth, ``deploy/clickhouse/migrations``, written for one node.
On a cluster every statement goes through ``clustered`` before it runs:

* ``CREATE DATABASE`` gets ``ON CLUSTER``.
* A ``CREATE TABLE`` of the MergeTree family becomes two tables: ``<name>_local`` on
  every node, ``Replicated<Engine>`` with the original engine arguments (version,
  is_deleted, ...), and ``<name>``, a ``Distributed`` table over the locals. Everything
  that reads or writes ``<name>`` (the sink, the views, Grafana) is unchanged.
* A materialized view reads the local source and writes the local target, so each
  shard feeds its own rows; views get ``ON CLUSTER`` and keep reading the Distributed
  names; ``ALTER``, ``DROP``, ``RENAME``, ``INSERT``, ``OPTIMIZE``, ``TRUNCATE``,
  ``DELETE`` and some ``SYSTEM`` statements are mapped as documented on each handler.
* Anything else fails with a ``StorageError`` naming the statement kind: a migration
  that has no clustered form stops the migration run before it executes anything.

**Sharding keys.** ``FINAL`` and ReplacingMergeTree collapse rows only within one
shard, so rows with the same sorting key must land on the same shard. A sharding key
made of columns of the table's ``ORDER BY`` guarantees that (equal sorting keys mean
equal key columns). A table whose ``ORDER BY`` has ``work_unit_id`` is sharded by
``cityHash64(work_unit_id)``: every table of a work unit (calls, outcomes, attributions)
is then on the same shard, so the views' joins of calls with attributions on
``work_unit_id`` can run shard by shard (``distributed_product_mode = 'local'``, see
docs/SCALING.md). Other tables are listed in ``SHARDING_KEYS``; a new table in neither
case fails the migration, so its author chooses (``rand()`` would break ``FINAL``).

**State.** Some statements need to know what earlier migrations created (the key of a
table being renamed, whether a name is a table or a view, whether an MV's source and
target are co-sharded). ``ClusterSchema`` records that as statements go by; the runner
passes one through every migration, applied or not, in order.

chdb cannot run a cluster: tests check that every transformed statement parses
(``formatQuery``) and has the expected shape, not that a cluster executes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NoReturn

from schemas.errors import ConfigurationError, StorageError

CLUSTER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
LOCAL_SUFFIX = "_local"
DB = "{db}"  # the runner replaces it with the database name after the transform

# {shard}, {replica} and {database} are server macros. {uuid} (the table's UUID, the
# same on every replica of an ON CLUSTER create) keeps paths unique when a name is
# reused: ClickHouse unfolds {database} and the name into the stored path at CREATE, so
# after migration 0004 renames cost_per_outcome_windows_local and creates it again, a
# path of the name alone would already be taken by the renamed table.
ZOOKEEPER_PATH = "/clickhouse/tables/{{shard}}/{{database}}/{local}/{{uuid}}"
REPLICA_NAME = "{replica}"

# Tables whose ORDER BY has no work_unit_id. Each key is a subset of the table's ORDER BY
# columns (checked at every CREATE), so rows that collapse share a shard.
RANDOM = None  # rows placed by a materialized view, not by a key (see model_usage_hourly)
SHARDING_KEYS: dict[str, tuple[str, ...] | None] = {
    # The window's identity: every row of one window (total, model and agent rows and
    # their corrections) on one shard, so FINAL and v_window_totals' sums stay per shard.
    "cost_per_outcome_windows": ("window_seconds", "window_start", "team", "workflow"),
    # An alert episode's firing and resolved rows together (v_alerts groups by alert_id).
    "alerts": ("alert_id",),
    "dead_letters": ("dead_letter_id",),
    "late_events": ("late_id",),
    "prices": ("provider", "price_key"),
    "budgets": ("team", "workflow", "period"),
    "workflows": ("team", "workflow"),
    "spend_forecasts": ("team", "workflow", "budget"),
    # Migration 0015: a day's settling records on one shard, so FINAL keeps its latest.
    "settled_days": ("day",),
    # Migration 0016: a week's decile records on one shard; its figures beside them.
    "settled_weeks": ("week",),
    "settled_deciles": ("week",),
    "schema_migrations": ("version",),
    # Migration 0002's rollup, fed by an MV on model_calls: each shard aggregates its own
    # calls, so a (team, workflow, model, provider, hour) has a partial row per shard.
    # Reads always sum (GROUP BY), which is exact across shards; FINAL would not be, and
    # a key here would let optimize_skip_unused_shards skip shards that hold rows.
    "model_usage_hourly": RANDOM,
}
DERIVED_KEY_COLUMN = "work_unit_id"

# Engines whose merges combine rows by adding them up: a partial row per shard is fine,
# because reads aggregate. The others (Replacing, Collapsing, plain) need co-location.
AGGREGATING_ENGINES = ("AggregatingMergeTree", "SummingMergeTree")

# MergeTree settings that mean nothing on a Replicated table. Replicated tables always
# deduplicate inserts (insert_deduplication_token included) through
# replicated_deduplication_window (10,000 blocks, 1 hour by default in 26.x); the
# non-replicated window only exists because a single-node table has no such log.
# Everything else (ttl_only_drop_parts, ...) applies to both and is kept.
DROPPED_SETTINGS = frozenset({"non_replicated_deduplication_window"})

# ALTER commands that change columns: they go to the local tables and to the Distributed
# one (which must expose the same columns). The rest touch data or storage: local only.
_STRUCTURE_COMMANDS = {("ADD", "COLUMN"), ("DROP", "COLUMN"), ("MODIFY", "COLUMN"),
                       ("RENAME", "COLUMN"), ("COMMENT", "COLUMN"), ("ALTER", "COLUMN")}
_LOCAL_COMMANDS = {("MODIFY", "TTL"), ("REMOVE", "TTL"), ("MODIFY", "SETTING"),
                   ("RESET", "SETTING"), ("ADD", "INDEX"), ("DROP", "INDEX"),
                   ("MATERIALIZE", "INDEX"), ("MATERIALIZE", "COLUMN"),
                   ("MATERIALIZE", "TTL"), ("MATERIALIZE", "PROJECTION"),
                   ("CLEAR", "COLUMN"), ("CLEAR", "INDEX"), ("CLEAR", "PROJECTION"),
                   ("ADD", "PROJECTION"), ("DROP", "PROJECTION"), ("ADD", "CONSTRAINT"),
                   ("DROP", "CONSTRAINT"), ("MODIFY", "ORDER"), ("MODIFY", "COMMENT"),
                   ("DROP", "PARTITION"), ("DROP", "PART"), ("DETACH", "PARTITION"),
                   ("ATTACH", "PARTITION"), ("FREEZE", "PARTITION")}
# SYSTEM commands by what they act on: the local tables, the Distributed table, or the
# whole server (then only ON CLUSTER is added).
_SYSTEM_LOCAL = {("STOP", "MERGES"), ("START", "MERGES"), ("STOP", "TTL", "MERGES"),
                 ("START", "TTL", "MERGES"), ("STOP", "MOVES"), ("START", "MOVES"),
                 ("STOP", "FETCHES"), ("START", "FETCHES"), ("SYNC", "REPLICA"),
                 ("STOP", "REPLICATION", "QUEUES"), ("START", "REPLICATION", "QUEUES"),
                 ("STOP", "REPLICATED", "SENDS"), ("START", "REPLICATED", "SENDS")}
_SYSTEM_DISTRIBUTED = {("FLUSH", "DISTRIBUTED"), ("STOP", "DISTRIBUTED", "SENDS"),
                       ("START", "DISTRIBUTED", "SENDS")}
_SYSTEM_SERVER = {("FLUSH", "LOGS"), ("RELOAD", "DICTIONARIES"), ("RELOAD", "CONFIG"),
                  ("DROP", "DNS", "CACHE"), ("DROP", "MARK", "CACHE"),
                  ("DROP", "UNCOMPRESSED", "CACHE"), ("DROP", "QUERY", "CACHE")}

_CLAUSES = {"PARTITION", "ORDER", "PRIMARY", "SAMPLE", "TTL", "SETTINGS", "COMMENT"}

SQL_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<comment>--[^\n]*|/\*.*?\*/)
  | (?P<string>'(?:[^'\\]|\\.|'')*')
  | (?P<quoted>`(?:[^`\\]|\\.|``)*`|"(?:[^"\\]|\\.|"")*")
  | (?P<placeholder>\{[^{}]*\})
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<number>\d[\w.]*)
  | (?P<punct>.)
""", re.VERBOSE | re.DOTALL)


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    text: str
    start: int
    end: int
    depth: int  # bracket depth outside the token (brackets carry their outer depth)

    @property
    def upper(self) -> str:
        return self.text.upper() if self.kind == "word" else self.text


@dataclass(frozen=True, slots=True)
class ShardedTable:
    """A table that exists as ``<name>_local`` plus a Distributed ``<name>``."""

    key: tuple[str, ...] | None  # None: rand(), rows placed by an MV (aggregates only)
    engine: str

    def expression(self) -> str:
        return "rand()" if self.key is None else f"cityHash64({', '.join(self.key)})"


@dataclass
class ClusterSchema:
    """What the statements seen so far created: sharded tables and views, by name."""

    cluster: str
    tables: dict[str, ShardedTable] = field(default_factory=dict)
    views: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not CLUSTER_NAME.match(self.cluster):
            raise ConfigurationError(
                f"cluster name {self.cluster!r} is not a ClickHouse cluster name "
                "(letters, digits, '_', '.', '-')", cluster=self.cluster)

    @property
    def on_cluster(self) -> str:
        return f"ON CLUSTER '{self.cluster}'"

    def table(self, name: str, statement: _Statement) -> ShardedTable:
        if name not in self.tables:
            statement.fail(f"{DB}.{name} is not a table created by an earlier migration "
                           "(on a cluster the transform has to know its sharding key)",
                           table=name)
        return self.tables[name]

    def distributed(self, name: str, sharded: ShardedTable, if_not_exists: str) -> str:
        local = name + LOCAL_SUFFIX
        return (f"CREATE TABLE {if_not_exists}{DB}.{name} {self.on_cluster} AS {DB}.{local}\n"
                f"ENGINE = Distributed('{self.cluster}', '{DB}', '{local}', "
                f"{sharded.expression()})")


def clustered(statement: str, cluster: str, schema: ClusterSchema | None = None) -> list[str]:
    """The statements that do on ``cluster`` what ``statement`` does on one node.

    ``statement`` is a migration statement as written (``{db}`` not yet replaced). Pass
    the same ``schema`` through every statement of every migration, in order: without
    it, a statement about an earlier table (ALTER, INSERT, RENAME, an MV) fails, since
    the transform cannot know that table's sharding key.
    """
    schema = schema if schema is not None else ClusterSchema(cluster)
    if schema.cluster != cluster:
        raise ConfigurationError("the schema was built for another cluster",
                                 cluster=cluster, schema_cluster=schema.cluster)
    parsed = _Statement(statement)
    words = parsed.words(0, 4)
    if parsed.has_on_cluster():
        parsed.fail("the statement already says ON CLUSTER: migrations are written for "
                    "one node and made clustered by the transform")
    if words[:2] == ["CREATE", "DATABASE"]:
        return [_create_database(parsed, schema)]
    if words[:2] == ["CREATE", "TABLE"]:
        return _create_table(parsed, schema)
    if words[:2] == ["CREATE", "VIEW"] or words[:4] == ["CREATE", "OR", "REPLACE", "VIEW"]:
        return [_create_view(parsed, schema)]
    if words[:3] == ["CREATE", "MATERIALIZED", "VIEW"]:
        return [_create_materialized_view(parsed, schema)]
    if words[:2] == ["ALTER", "TABLE"]:
        return _alter(parsed, schema)
    if words[:1] == ["DROP"]:
        return _drop(parsed, schema)
    if words[:2] == ["RENAME", "TABLE"]:
        return _rename(parsed, schema)
    if words[:2] == ["INSERT", "INTO"]:
        return [_insert(parsed, schema)]
    if words[:2] == ["OPTIMIZE", "TABLE"] or words[:1] == ["TRUNCATE"] \
            or words[:2] == ["DELETE", "FROM"]:
        return [_on_local(parsed, schema)]
    if words[:1] == ["SYSTEM"]:
        return [_system(parsed, schema)]
    parsed.fail("no clustered form for this kind of statement")


class _Statement:
    """One statement, tokenized; edits are made on the original text, so everything the
    transform does not touch (view bodies, ``{from_time:...}`` parameters, comments
    inside) comes out byte for byte."""

    def __init__(self, text: str) -> None:
        tokens: list[Token] = []
        depth = 0
        for match in SQL_TOKEN.finditer(text):
            kind = match.lastgroup or "punct"
            if kind in ("ws", "comment"):
                continue
            value = match.group()
            if kind == "punct" and value in "([":
                tokens.append(Token(kind, value, match.start(), match.end(), depth))
                depth += 1
                continue
            if kind == "punct" and value in ")]":
                depth = max(depth - 1, 0)
            tokens.append(Token(kind, value, match.start(), match.end(), depth))
        if tokens and tokens[-1].text == ";":
            tokens.pop()
        if not tokens:
            raise StorageError("an empty statement has no clustered form", kind="empty")
        # Leading comments (split_statements keeps them) are dropped from the output.
        self.text = text[tokens[0].start:tokens[-1].end]
        offset = tokens[0].start
        self.tokens = [Token(t.kind, t.text, t.start - offset, t.end - offset, t.depth)
                       for t in tokens]

    @property
    def kind(self) -> str:
        """The leading keywords (``CREATE MATERIALIZED VIEW``, ``SYSTEM STOP MERGES``),
        for messages."""
        words = []
        for token in self.tokens[:4]:
            if token.kind != "word" or token.upper == "IF":
                break
            words.append(token.upper)
        return " ".join(words) or self.tokens[0].text

    def fail(self, message: str, **fields: object) -> NoReturn:
        excerpt = " ".join(self.text.split())
        raise StorageError(f"{self.kind}: {message}", kind=self.kind,
                           statement=excerpt[:160], **fields)

    def words(self, index: int, count: int) -> list[str]:
        return [t.upper for t in self.tokens[index:index + count]]

    def word(self, index: int) -> str:
        return self.tokens[index].upper if index < len(self.tokens) else ""

    def has_on_cluster(self) -> bool:
        """``ON CLUSTER`` in the statement's head: before any column list, AS, SELECT or
        VALUES (a view's ``JOIN ... ON cluster = ...`` is not one)."""
        for i, token in enumerate(self.tokens):
            if token.text == "(" or token.upper in ("AS", "SELECT", "WITH", "VALUES"):
                return False
            if token.upper == "ON" and self.word(i + 1) == "CLUSTER":
                return True
        return False

    def skip(self, index: int, *words: str) -> int:
        """The index after ``words`` if they come next, else ``index``."""
        if self.words(index, len(words)) == list(words):
            return index + len(words)
        return index

    def name(self, index: int) -> tuple[str, int]:
        """A table or view name ``{db}.name`` at ``index``: the bare name and the index
        after it."""
        # Plain words only: the transform appends _local to names, which a quoted name
        # would not survive.
        if (index + 2 < len(self.tokens) and self.tokens[index].text == DB
                and self.tokens[index + 1].text == "."
                and self.tokens[index + 2].kind == "word"):
            return self.tokens[index + 2].text, index + 3
        found = self.tokens[index].text if index < len(self.tokens) else "the end"
        self.fail(f"expected a name {DB}.<name> (unquoted) at {found!r}: migrations name "
                  f"every table and view with the {DB} placeholder")

    def end(self, index: int) -> int:
        """Text offset where token ``index`` ends."""
        return self.tokens[index].end

    def start(self, index: int) -> int:
        return self.tokens[index].start if index < len(self.tokens) else len(self.text)

    def closing(self, index: int) -> int:
        """Index of the bracket closing the one at ``index``."""
        depth = self.tokens[index].depth
        for j in range(index + 1, len(self.tokens)):
            if self.tokens[j].text in ")]" and self.tokens[j].depth == depth:
                return j
        self.fail("unbalanced brackets")

    def find(self, word: str, start: int, stop: int | None = None, depth: int = 0) -> int:
        """Index of the first bare ``word`` at ``depth`` in ``[start, stop)``, or -1."""
        stop = len(self.tokens) if stop is None else stop
        for j in range(start, stop):
            token = self.tokens[j]
            if token.kind == "word" and token.upper == word and token.depth == depth:
                return j
        return -1

    def split(self, start: int, stop: int, depth: int = 0) -> list[tuple[int, int]]:
        """``[start, stop)`` cut at commas at ``depth``: token index ranges."""
        parts, begin = [], start
        for j in range(start, stop):
            if self.tokens[j].text == "," and self.tokens[j].depth == depth:
                parts.append((begin, j))
                begin = j + 1
        parts.append((begin, stop))
        return [(a, b) for a, b in parts if a < b]

    def slice(self, first: int, stop: int) -> str:
        """Original text of tokens ``[first, stop)``."""
        if first >= stop:
            return ""
        return self.text[self.tokens[first].start:self.tokens[stop - 1].end]

    def table_refs(self, start: int) -> list[tuple[str, int]]:
        """Every ``{db}.name`` from ``start`` on: (name, index of the name token)."""
        refs = []
        for j in range(start, len(self.tokens) - 2):
            if self.tokens[j].text == DB and self.tokens[j + 1].text == ".":
                name, _ = self.name(j)
                refs.append((name, j + 2))
        return refs


def _edit(text: str, edits: list[tuple[int, int, str]]) -> str:
    """Apply (start, end, replacement) edits, which must not overlap."""
    out, position = [], 0
    for start, end, replacement in sorted(edits):
        out.append(text[position:start])
        out.append(replacement)
        position = end
    out.append(text[position:])
    return "".join(out)


def _create_database(s: _Statement, schema: ClusterSchema) -> str:
    i = s.skip(2, "IF", "NOT", "EXISTS")
    if s.tokens[i].kind not in ("placeholder", "word", "quoted"):
        s.fail("expected a database name")
    return _edit(s.text, [(s.end(i), s.end(i), f" {schema.on_cluster}")])


def _create_table(s: _Statement, schema: ClusterSchema) -> list[str]:
    """``<name>_local`` (Replicated engine, original arguments and clauses) on every node,
    then the Distributed ``<name>``."""
    i = s.skip(2, "IF", "NOT", "EXISTS")
    if_not_exists = "IF NOT EXISTS " if i > 2 else ""
    name, i = s.name(i)
    edits = [(s.start(i - 3), s.end(i - 1), f"{DB}.{name}{LOCAL_SUFFIX} {schema.on_cluster}")]
    if s.word(i) == "UUID":
        s.fail("an explicit UUID would be the same on every node", table=name)
    if s.word(i) == "AS":
        if s.tokens[i + 1].text != DB:
            s.fail("CREATE TABLE ... AS SELECT or AS a table function has no clustered "
                   "form: create the table, then INSERT ... SELECT", table=name)
        source, after = s.name(i + 1)
        schema.table(source, s)
        edits.append((s.start(i + 1), s.end(after - 1), f"{DB}.{source}{LOCAL_SUFFIX}"))
        i = after
    elif s.word(i) == "(":
        i = s.closing(i) + 1
    engine_at = s.find("ENGINE", i)
    if engine_at < 0:
        s.fail("no ENGINE clause: name the engine so the transform can replicate it",
               table=name)
    j = engine_at + 1 + (s.word(engine_at + 1) == "=")
    engine = s.tokens[j].text
    if not engine.endswith("MergeTree") or engine.startswith(("Replicated", "Shared")):
        s.fail(f"engine {engine} is not a non-replicated MergeTree engine, the only kind "
               "the transform knows how to replicate", table=name, engine=engine)
    args, engine_end = "", j
    if s.word(j + 1) == "(":
        close = s.closing(j + 1)
        args = s.slice(j + 2, close)
        engine_end = close
    path = ZOOKEEPER_PATH.format(local=name + LOCAL_SUFFIX)
    replicated = f"Replicated{engine}('{path}', '{REPLICA_NAME}'{', ' if args else ''}{args})"
    edits.append((s.start(j), s.end(engine_end), replicated))

    clauses = _clauses(s, engine_end + 1)
    if "ORDER" not in clauses:
        s.fail("no ORDER BY: the sharding key is chosen from it", table=name)
    order_by = _order_by_columns(s, *clauses["ORDER"])
    sharded = ShardedTable(_sharding_key(s, name, engine, order_by), engine)
    if "SETTINGS" in clauses:
        edits.append(_settings_edit(s, *clauses["SETTINGS"]))
    schema.tables[name] = sharded
    schema.views.discard(name)
    return [_edit(s.text, edits), schema.distributed(name, sharded, if_not_exists)]


def _clauses(s: _Statement, start: int) -> dict[str, tuple[int, int]]:
    """Top-level clauses after the engine: keyword -> token range of its body."""
    marks = [(j, t.upper) for j, t in enumerate(s.tokens[start:], start)
             if t.depth == 0 and t.kind == "word" and t.upper in _CLAUSES]
    found: dict[str, tuple[int, int]] = {}
    for n, (j, word) in enumerate(marks):
        stop = marks[n + 1][0] if n + 1 < len(marks) else len(s.tokens)
        body = j + 1 + (word in ("PARTITION", "ORDER", "SAMPLE", "PRIMARY"))
        found.setdefault(word, (body, stop))
    return found


def _order_by_columns(s: _Statement, start: int, stop: int) -> set[str]:
    """The plain columns of an ORDER BY (a tuple or one expression); expressions such
    as ``toStartOfHour(occurred_at)`` are not columns and cannot be part of a key."""
    if s.tokens[start].text == "(" and s.closing(start) == stop - 1:
        parts = s.split(start + 1, stop - 1, depth=1)
    else:
        parts = [(start, stop)]
    return {s.tokens[a].text.strip("`\"") for a, b in parts
            if b - a == 1 and s.tokens[a].kind in ("word", "quoted")}


def _sharding_key(s: _Statement, name: str, engine: str,
                  order_by: set[str]) -> tuple[str, ...] | None:
    if name in SHARDING_KEYS:
        key = SHARDING_KEYS[name]
        if key is None:
            if not engine.endswith(AGGREGATING_ENGINES):
                s.fail(f"{name} is sharded by rand() in SHARDING_KEYS, which only an "
                       f"aggregating engine tolerates, not {engine}", table=name)
            return None
        missing = [column for column in key if column not in order_by]
        if missing:
            s.fail(f"the sharding key of {name} uses {', '.join(missing)}, which its ORDER "
                   "BY does not: rows that collapse could land on different shards; fix "
                   "SHARDING_KEYS", table=name, sharding_key=list(key))
        return key
    if DERIVED_KEY_COLUMN in order_by:
        return (DERIVED_KEY_COLUMN,)
    s.fail(f"no sharding key for table {name}: its ORDER BY has no {DERIVED_KEY_COLUMN}. "
           "Add it to SHARDING_KEYS in streams/clickhouse/cluster.py with columns of its "
           "ORDER BY (rows that FINAL collapses must land on one shard)", table=name)


def _settings_edit(s: _Statement, start: int, stop: int) -> tuple[int, int, str]:
    kept = [s.slice(a, b) for a, b in s.split(start, stop)
            if s.tokens[a].text not in DROPPED_SETTINGS]
    # Replace from the SETTINGS keyword, so that nothing is left when nothing is kept.
    begin = s.start(start - 1)
    end = s.end(stop - 1)
    return (begin, end, f"SETTINGS {', '.join(kept)}" if kept else "")


def _create_view(s: _Statement, schema: ClusterSchema) -> str:
    """A view on every node, over the Distributed names: its body is not touched."""
    i = s.find("VIEW", 0) + 1
    i = s.skip(i, "IF", "NOT", "EXISTS")
    name, i = s.name(i)
    if name in schema.tables:
        s.fail(f"{name} is a sharded table; drop it before creating a view of that name",
               table=name)
    schema.views.add(name)
    return _edit(s.text, [(s.end(i - 1), s.end(i - 1), f" {schema.on_cluster}")])


def _create_materialized_view(s: _Statement, schema: ClusterSchema) -> str:
    """The MV on every node reads the source's local table and writes the target's local
    table: each shard feeds its own rows, with no network hop. That places the target's
    rows on the source's shard, so unless the target aggregates, both must share a key."""
    i = s.skip(3, "IF", "NOT", "EXISTS")
    name, i = s.name(i)
    if s.word(i) == "REFRESH":
        s.fail("a refreshable MV would refresh on every node; not supported", view=name)
    if s.word(i) != "TO":
        s.fail("an MV without TO keeps its rows in an inner table the transform cannot "
               "shard: write it as TO {db}.<table>", view=name)
    target, after = s.name(i + 1)
    target_table = schema.table(target, s)
    select_at = s.find("AS", after)
    if select_at < 0:
        s.fail("no AS SELECT", view=name)
    refs = s.table_refs(select_at + 1)
    sources = {ref for ref, _ in refs}
    if len(sources) != 1:
        s.fail(f"the MV reads {len(sources)} tables ({', '.join(sorted(sources))}); on a "
               "cluster only an MV over one source table is supported", view=name)
    source = refs[0][0]
    source_table = schema.table(source, s)
    if target_table.key != source_table.key and target_table.key is not None:
        s.fail(f"{source} is sharded by {source_table.expression()} and {target} by "
               f"{target_table.expression()}: the MV writes each row on its source's "
               "shard, so FINAL on the target would miss duplicates", view=name)
    edits = [(s.end(i - 1), s.end(i - 1), f" {schema.on_cluster}"),
             (s.end(after - 1), s.end(after - 1), LOCAL_SUFFIX)]
    edits += [(s.end(j), s.end(j), LOCAL_SUFFIX) for _, j in refs]
    schema.views.add(name)
    return _edit(s.text, edits)


def _alter(s: _Statement, schema: ClusterSchema) -> list[str]:
    """Every command on the local tables; column changes on the Distributed table too,
    after the locals, so it never exposes a column they do not have yet."""
    name, i = s.name(2)
    schema.table(name, s)
    if s.word(i) in ("UPDATE", "DELETE"):
        commands = [(i, len(s.tokens))]  # one mutation: its commas are not commands
    else:
        commands = s.split(i, len(s.tokens))
    structure = []
    for a, b in commands:
        head = tuple(s.words(a, 2))
        if head in _STRUCTURE_COMMANDS:
            structure.append(s.slice(a, b))
        elif head not in _LOCAL_COMMANDS and head[0] not in ("UPDATE", "DELETE"):
            s.fail(f"ALTER command {' '.join(head)} has no clustered form", table=name)
    target = f"{DB}.{name}"
    local = _edit(s.text, [(s.start(2), s.end(i - 1),
                            f"{target}{LOCAL_SUFFIX} {schema.on_cluster}")])
    out = [local]
    if structure:
        out.append(f"ALTER TABLE {target} {schema.on_cluster}\n    " + ",\n    ".join(structure))
    return out


def _drop(s: _Statement, schema: ClusterSchema) -> list[str]:
    """A sharded table: the Distributed one first (nothing reads a missing local through
    it), then the locals. Views and databases: ON CLUSTER."""
    what = s.word(1)
    if what not in ("TABLE", "VIEW", "DATABASE"):
        s.fail(f"DROP {what} has no clustered form")
    i = s.skip(2, "IF", "EXISTS")
    if_exists = i > 2
    if what == "DATABASE":
        return [_edit(s.text, [(s.end(i), s.end(i), f" {schema.on_cluster}")])]
    name, i = s.name(i)
    if s.word(i) == ",":
        s.fail("drop one table per statement")
    tail = s.text[s.end(i - 1):]
    if what == "VIEW" or name in schema.views:
        if name in schema.tables:
            s.fail(f"DROP VIEW of {name}, a table", table=name)
        schema.views.discard(name)
        return [_edit(s.text, [(s.end(i - 1), s.end(i - 1), f" {schema.on_cluster}")])]
    if name not in schema.tables and not if_exists:
        schema.table(name, s)  # fails: dropping an unknown table
    schema.tables.pop(name, None)
    head = "DROP TABLE IF EXISTS" if if_exists else "DROP TABLE"
    return [f"{head} {DB}.{name} {schema.on_cluster}{tail}",
            f"{head} {DB}.{name}{LOCAL_SUFFIX} {schema.on_cluster}{tail}"]


def _rename(s: _Statement, schema: ClusterSchema) -> list[str]:
    """A Distributed table names its local table, and RENAME does not change that: after
    renaming the locals, the old Distributed table would still point at the old local
    name (which migration 0004 creates again, empty). So per pair: deliver what the
    Distributed table still queues, drop it, rename the locals, and create a Distributed
    table for the new name with the old key. Views are renamed ON CLUSTER."""
    out = []
    for a, b in s.split(2, len(s.tokens)):
        source, i = s.name(a)
        if s.word(i) != "TO" or i + 1 >= b:
            s.fail("expected RENAME TABLE {db}.a TO {db}.b")
        target, _ = s.name(i + 1)
        if source in schema.views:
            schema.views.discard(source)
            schema.views.add(target)
            out.append(f"RENAME TABLE {DB}.{source} TO {DB}.{target} {schema.on_cluster}")
            continue
        sharded = schema.table(source, s)
        out += [f"SYSTEM FLUSH DISTRIBUTED {schema.on_cluster} {DB}.{source}",
                f"DROP TABLE {DB}.{source} {schema.on_cluster}",
                f"RENAME TABLE {DB}.{source}{LOCAL_SUFFIX} TO {DB}.{target}{LOCAL_SUFFIX} "
                f"{schema.on_cluster}",
                schema.distributed(target, sharded, "")]
        del schema.tables[source]
        schema.tables[target] = sharded
    return out


def _insert(s: _Statement, schema: ClusterSchema) -> str:
    """Into the Distributed table, synchronously: the SELECT (FINAL included) runs on each
    shard, the rows are routed by the target's own sharding key, and the statement
    returns once every shard has stored its part, so a migration is recorded only when
    its rows are in. parallel_distributed_insert_select (2 by default in 26.x) would keep
    each row on the shard it was read from, right only if both tables share a key and
    the SELECT leaves the key columns as they are; 0 makes it right for any copy, at the
    cost of the rows passing through the node that runs the migration (fine for the
    windows table of 0004; a large copy should be written per shard)."""
    at = s.skip(2, "TABLE")
    if s.word(at) == "FUNCTION":
        s.fail("INSERT INTO a table function has no clustered form")
    name, i = s.name(at)
    schema.table(name, s)
    if s.word(i) == "(":
        i = s.closing(i) + 1
    if s.word(i) == "SETTINGS":
        s.fail("the INSERT sets its own SETTINGS; merge them with the cluster's by hand",
               table=name)
    settings = "SETTINGS parallel_distributed_insert_select = 0, distributed_foreground_insert = 1"
    return _edit(s.text, [(s.end(i - 1), s.end(i - 1), f" {settings}")])


def _on_local(s: _Statement, schema: ClusterSchema) -> str:
    """OPTIMIZE, TRUNCATE and lightweight DELETE act on stored parts: the local tables,
    ON CLUSTER (each replicated table applies it once per shard)."""
    i = 2 if s.word(0) != "TRUNCATE" else s.skip(1, "TABLE")
    i = s.skip(i, "IF", "EXISTS")
    name, after = s.name(i)
    schema.table(name, s)
    return _edit(s.text, [(s.end(after - 1), s.end(after - 1),
                           f"{LOCAL_SUFFIX} {schema.on_cluster}")])


def _system(s: _Statement, schema: ClusterSchema) -> str:
    at = next((j for j, t in enumerate(s.tokens) if t.text == DB), len(s.tokens))
    command = tuple(s.words(1, at - 1))
    if at == len(s.tokens):
        if command in _SYSTEM_SERVER or command in _SYSTEM_LOCAL \
                or command in _SYSTEM_DISTRIBUTED:
            return f"{s.text} {schema.on_cluster}"
        s.fail(f"SYSTEM {' '.join(command)} has no clustered form")
    if command in _SYSTEM_LOCAL:
        suffix = LOCAL_SUFFIX
    elif command in _SYSTEM_DISTRIBUTED:
        suffix = ""
    else:
        s.fail(f"SYSTEM {' '.join(command)} has no clustered form")
    name, after = s.name(at)
    schema.table(name, s)
    return _edit(s.text, [(s.start(at), s.start(at), f"{schema.on_cluster} "),
                          (s.end(after - 1), s.end(after - 1), suffix)])
