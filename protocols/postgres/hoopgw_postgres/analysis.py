"""The PostgreSQL :class:`~hoopgw.sql.Dialect`: statements parsed by PostgreSQL's own grammar.

The parser is libpg_query (BSD-3-Clause) through the ``pg-query-python`` binding. Each statement's
parse tree is walked generically, node by node, so a statement is classified by every node it
holds however deeply nested: data-modifying CTEs, ``EXPLAIN ANALYZE``, ``COPY (query)``,
``CREATE RULE`` actions, ``PREPARE`` bodies, ``SELECT INTO`` and function calls anywhere.

A statement kind this module does not know falls in ``opaque-code``: a newer server's statement
is refused under a policy that denies it rather than waved through.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from importlib import resources
from typing import Any

import attrs
import pg_query
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from pg_query import pg_query_pb2

from hoopgw.sql import DENY_CLASSES, Analysis, FunctionCatalog, StatementFacts
from hoopgw_postgres.shape import tree_key

__all__ = [
    "FUNCTION_CLASSES",
    "HARMLESS_FUNCTIONS",
    "REVIEWED_VOLATILE",
    "SQL_JSON_FUNCTIONS",
    "PostgresDialect",
    "ends_transaction",
]

_CACHE_SIZE = 2048
# Larger texts (bulk INSERTs) are analysed every time rather than pinned in memory.
_CACHEABLE_LENGTH = 16384

# Statements that read, or only change the session's own transient state.
_HARMLESS = frozenset(
    {
        "SelectStmt",
        "ExplainStmt",
        "VariableShowStmt",
        "VariableSetStmt",
        "TransactionStmt",
        "PrepareStmt",
        "ExecuteStmt",
        "DeallocateStmt",
        "DeclareCursorStmt",
        "FetchStmt",
        "ClosePortalStmt",
        "ListenStmt",
        "UnlistenStmt",
        "NotifyStmt",
        "DiscardStmt",
        "LockStmt",
        "ConstraintsSetStmt",
        "CopyStmt",
        "ReturnStmt",
        "SetOperationStmt",
    }
)
_WRITE = frozenset({"InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt", "RefreshMatViewStmt"})
_DDL = frozenset(
    {
        "IndexStmt",
        "ViewStmt",
        "RuleStmt",
        "RenameStmt",
        "CommentStmt",
        "SecLabelStmt",
        "CompositeTypeStmt",
        "DefineStmt",
        "ImportForeignSchemaStmt",
        "CreateTableAsStmt",
        "ReassignOwnedStmt",
    }
)
_PRIVILEGE = frozenset(
    {
        "GrantStmt",
        "GrantRoleStmt",
        "CreateRoleStmt",
        "AlterRoleStmt",
        "AlterRoleSetStmt",
        "DropRoleStmt",
        "AlterDefaultPrivilegesStmt",
        "ReassignOwnedStmt",
        "AlterOwnerStmt",
        "CreatePolicyStmt",
        "AlterPolicyStmt",
        "CreateUserMappingStmt",
        "AlterUserMappingStmt",
    }
)
_ADMIN = frozenset(
    {
        "AlterSystemStmt",
        "CreateExtensionStmt",
        "AlterExtensionStmt",
        "AlterExtensionContentsStmt",
        "LoadStmt",
        "AlterDatabaseStmt",
        "AlterDatabaseSetStmt",
        "AlterDatabaseRefreshCollStmt",
        "AlterRoleSetStmt",
        "CreateTableSpaceStmt",
        "DropTableSpaceStmt",
        "AlterTableSpaceOptionsStmt",
        "CheckPointStmt",
        "VacuumStmt",
        "ClusterStmt",
        "ReindexStmt",
        "CreateSubscriptionStmt",
        "AlterSubscriptionStmt",
        "DropSubscriptionStmt",
        "CreateEventTrigStmt",
        "AlterEventTrigStmt",
        "CreateFdwStmt",
        "AlterFdwStmt",
        "CreateForeignServerStmt",
        "AlterForeignServerStmt",
    }
)
_OPAQUE = frozenset({"DoStmt", "CallStmt", "LoadStmt", "CreateFunctionStmt"})
# ALTER TABLE sub-commands that change who may see or own rows.
_PRIVILEGE_TABLE_COMMANDS = frozenset(
    {
        "AT_EnableRowSecurity",
        "AT_DisableRowSecurity",
        "AT_ForceRowSecurity",
        "AT_NoForceRowSecurity",
        "AT_ChangeOwner",
    }
)


def _load_functions() -> tuple[
    dict[str, tuple[str, ...]], frozenset[str], frozenset[str], frozenset[str]
]:
    """The reviewed built-in function lists: ``functions.toml`` and ``stable_functions.txt``.

    :returns: the classes of each listed name; the names that need no class (reviewed
        read-only or judged by their arguments, and the STABLE or IMMUTABLE built-ins); the
        VOLATILE names reviewed as read-only or judged by their arguments; the names judged by
        their arguments.
    """
    folder = resources.files("hoopgw_postgres")
    data = tomllib.loads(folder.joinpath("functions.toml").read_text(encoding="utf-8"))
    classes: dict[str, list[str]] = {}
    for cls in DENY_CLASSES:
        for name in data["classes"].get(cls, ()):
            classes.setdefault(name, []).append(cls)
    unknown = set(data["classes"]) - set(DENY_CLASSES)
    if unknown:
        raise RuntimeError(f"functions.toml names unknown classes: {sorted(unknown)}")
    by_argument = frozenset(data["by-argument"]["names"])
    stable = (
        line.strip()
        for line in folder.joinpath("stable_functions.txt").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    )
    reviewed = frozenset({*data["read-only"]["names"], *by_argument})
    harmless = reviewed | frozenset(stable)
    return {k: tuple(v) for k, v in classes.items()}, harmless, reviewed, by_argument


FUNCTION_CLASSES, HARMLESS_FUNCTIONS, REVIEWED_VOLATILE, _BY_ARGUMENT = _load_functions()
"""Built-in functions by bare name: the classes of those that change or reach beyond the
statement, and the names reviewed as harmless (VOLATILE ones that only read, and every STABLE or
IMMUTABLE one). A function in neither is ``opaque-code`` until the target's catalog says it is
not VOLATILE (:mod:`hoopgw_postgres.catalog`)."""

# Settings whose change escapes the caller's privileges or the server's safeguards.
_PRIVILEGE_SETTINGS = frozenset({"role", "session_authorization", "search_path"})
_ADMIN_SETTINGS = frozenset(
    {
        "session_replication_role",
        "default_transaction_read_only",
        "transaction_read_only",
        "allow_system_table_mods",
        "ignore_system_indexes",
        "zero_damaged_pages",
        "ignore_checksum_failure",
        "row_security",
        "session_preload_libraries",
        "local_preload_libraries",
    }
)
_COMMANDS = {
    "SelectStmt": "SELECT",
    "InsertStmt": "INSERT",
    "UpdateStmt": "UPDATE",
    "DeleteStmt": "DELETE",
    "MergeStmt": "MERGE",
    "CopyStmt": "COPY",
    "TruncateStmt": "TRUNCATE",
    "DropStmt": "DROP",
    "CreateStmt": "CREATE TABLE",
    "IndexStmt": "CREATE INDEX",
    "ViewStmt": "CREATE VIEW",
    "RuleStmt": "CREATE RULE",
    "CreateTableAsStmt": "CREATE TABLE AS",
    "CreateFunctionStmt": "CREATE FUNCTION",
    "VariableSetStmt": "SET",
    "VariableShowStmt": "SHOW",
    "DoStmt": "DO",
    "CallStmt": "CALL",
    "GrantStmt": "GRANT",
    "GrantRoleStmt": "GRANT",
    "AlterSystemStmt": "ALTER SYSTEM",
    "ExplainStmt": "EXPLAIN",
    "PrepareStmt": "PREPARE",
    "ExecuteStmt": "EXECUTE",
    "DeallocateStmt": "DEALLOCATE",
    "TransactionStmt": "TRANSACTION",
    "DefineStmt": "CREATE",
    "RenameStmt": "ALTER ... RENAME",
    "LoadStmt": "LOAD",
    "CreatedbStmt": "CREATE DATABASE",
    "DropdbStmt": "DROP DATABASE",
}
_FALSE_WORDS = frozenset({"false", "off", "no", "0"})
# Settings that make transactions read-only, and the spellings of "on" PostgreSQL accepts for
# them (parse_bool: any prefix of true or yes, on, 1; case-insensitive).
_READ_ONLY_SETTINGS = frozenset({"default_transaction_read_only", "transaction_read_only"})
_TRUE_WORDS = frozenset({"t", "tr", "tru", "true", "y", "ye", "yes", "on", "1"})
_VAR_SET_DEFAULT = pg_query_pb2.VAR_SET_DEFAULT
_VAR_RESET = pg_query_pb2.VAR_RESET
_VAR_RESET_ALL = pg_query_pb2.VAR_RESET_ALL
_ALTER_TABLE_TYPE = pg_query_pb2.AlterTableType
_DISCARD_ALL = pg_query_pb2.DISCARD_ALL
_VAR_SET_VALUE = pg_query_pb2.VAR_SET_VALUE
_AND, _OR = pg_query_pb2.AND_EXPR, pg_query_pb2.OR_EXPR
_AEXPR_OP, _AEXPR_OP_ALL = pg_query_pb2.AEXPR_OP, pg_query_pb2.AEXPR_OP_ALL
_EXISTS, _ANY = pg_query_pb2.EXISTS_SUBLINK, pg_query_pb2.ANY_SUBLINK
_CMD_UPDATE, _CMD_DELETE = pg_query_pb2.CMD_UPDATE, pg_query_pb2.CMD_DELETE
_MESSAGE = FieldDescriptor.TYPE_MESSAGE
_IS_NOT_NULL = pg_query_pb2.IS_NOT_NULL
_LIKE_KINDS = (pg_query_pb2.AEXPR_LIKE, pg_query_pb2.AEXPR_ILIKE, pg_query_pb2.AEXPR_SIMILAR)
_OPERATOR = re.compile(r"[-+*/<>=~!@#%^&|`?]+")
# The operators PostgreSQL builds a BETWEEN from (parse_expr.c, transformAExprBetween).
_BETWEEN_OPERATORS = {
    pg_query_pb2.AEXPR_BETWEEN: (">=", "<="),
    pg_query_pb2.AEXPR_BETWEEN_SYM: (">=", "<="),
    pg_query_pb2.AEXPR_NOT_BETWEEN: ("<", ">"),
    pg_query_pb2.AEXPR_NOT_BETWEEN_SYM: ("<", ">"),
}


def _command_name(kind: str) -> str:
    if kind in _COMMANDS:
        return _COMMANDS[kind]
    words = re.findall(r"[A-Z][a-z]*", kind.removesuffix("Stmt"))
    return " ".join(words).upper()


def _unwrap(node: Any) -> Any:
    """The concrete message inside a ``Node`` oneof wrapper (or ``node`` itself)."""
    if type(node).DESCRIPTOR.name == "Node":
        which = node.WhichOneof("node")
        return getattr(node, which) if which else None
    return node


def _children(node: Any) -> Iterator[Any]:
    for field, value in node.ListFields():
        if field.type != _MESSAGE:
            continue
        if isinstance(value, Message):
            child = _unwrap(value)
            if child is not None:
                yield child
        else:
            for item in value:
                child = _unwrap(item)
                if child is not None:
                    yield child


def _descendants(node: Any) -> Iterator[Any]:
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(_children(current))


def _name(node: Any) -> str:
    return str(type(node).DESCRIPTOR.name)


def _string(node: Any) -> str | None:
    """The text of a string constant (``'x'``), or None if ``node`` is anything else."""
    node = _unwrap(node)
    if _name(node) == "A_Const" and node.HasField("sval"):
        return str(node.sval.sval)
    return None


def _is_true(node: Any) -> bool:
    """Whether a setting's value is a constant PostgreSQL reads as boolean true."""
    node = _unwrap(node)
    if _name(node) != "A_Const":
        return False
    if node.HasField("sval"):
        return str(node.sval.sval).lower() in _TRUE_WORDS
    if node.HasField("ival"):
        return int(node.ival.ival) == 1
    if node.HasField("boolval"):
        return bool(node.boolval.boolval)
    return False


def _option_true(elem: Any) -> bool:
    """Whether a Boolean option (a ``DefElem``) may be on: PostgreSQL's ``defGetBoolean``
    takes no argument, ``true``/``on``/``1`` as on; an argument we cannot read counts as on."""
    if not elem.HasField("arg"):
        return True
    arg = _unwrap(elem.arg)
    if _name(arg) == "String":
        return str(arg.sval).lower() not in _FALSE_WORDS
    if _name(arg) == "Boolean":
        return bool(arg.boolval)
    if _name(arg) == "Integer":
        return bool(arg.ival)
    return True


# SQL/JSON constructors (PostgreSQL 16), by the function an older server's grammar calls for
# the same text. The gateway parses with a newer grammar than some targets run.
_SQL_JSON_CALLS = {
    "JsonArrayConstructor": "json_array",
    "JsonArrayQueryConstructor": "json_array",
    "JsonArrayAgg": "json_arrayagg",
    "JsonObjectConstructor": "json_object",
    "JsonObjectAgg": "json_objectagg",
}
SQL_JSON_FUNCTIONS = frozenset(_SQL_JSON_CALLS.values())
"""Names a SQL/JSON constructor may call on an older server: no function of the name in the
target's catalog means no code (a newer server runs its constructor, an older one fails)."""


def _explain_analyzes(explain: Any) -> bool:
    """Whether EXPLAIN runs the statement it explains.

    PostgreSQL applies options in order, so the last ``ANALYZE`` wins; the gateway counts the
    statement as run when *any* ``ANALYZE`` may be on, which covers the server's rule and
    needs no model of it (``EXPLAIN (ANALYZE false, ANALYZE true)`` runs).
    """
    return any(
        _option_true(elem)
        for elem in map(_unwrap, explain.options)
        if str(elem.defname) == "analyze"
    )


def _is_constant(node: Any) -> bool:
    return _name(_unwrap(node)) == "A_Const"


def _shape(node: Any, target: _Target, outer: bool, values: bool) -> tuple[Any, ...]:
    """A node's structure without source positions: equal shapes are the same expression. A
    column of ``target`` has one shape however it is qualified (``t.a`` and ``a``). Without
    ``values``, a constant's shape is its kind alone (``1`` and ``2`` are alike)."""
    node = _unwrap(node)
    if node is None:
        return ()
    if _name(node) == "ColumnRef" and target.named(node, outer=outer):
        last = _unwrap(node.fields[-1])
        return ("target column", str(last.sval) if _name(last) == "String" else "*")
    if not values and _name(node) == "A_Const":
        return ("A_Const", node.WhichOneof("val"), node.isnull)
    items: list[Any] = [_name(node)]
    for field, value in node.ListFields():
        if field.name == "location":
            continue
        if field.type != _MESSAGE:
            scalar = isinstance(value, str | bytes | int | float | bool)
            items.append((field.name, value if scalar else tuple(value)))
        elif isinstance(value, Message):
            items.append((field.name, _shape(value, target, outer, values)))
        else:
            items.append((field.name, tuple(_shape(v, target, outer, values) for v in value)))
    return tuple(items)


def _same(left: Any, right: Any, target: _Target, outer: bool) -> bool:
    """Whether two expressions are the same (``x = x``, ``t.x = x``). When that turns on the
    constants they hold (``x + 1 = x + 1``), the target's judgement reads literals."""
    bare = _shape(left, target, outer, False), _shape(right, target, outer, False)
    if bare[0] != bare[1]:
        return False  # no values of their constants can make them the same
    full = _shape(left, target, outer, True), _shape(right, target, outer, True)
    if full != bare:
        target.literal = True
    return full[0] == full[1]


# A byte that is not UTF-8 (a SQL_ASCII database takes any) reaches the analysis as a lone
# surrogate (``surrogateescape``), which the parser cannot take. It is parsed as a stand-in
# from the Private Use Area, one per byte value: like the byte, every byte of its UTF-8 form
# is non-ASCII, so the server's scanner and the parser split the text alike, equal bytes stay
# equal (dollar-quote tags), and no name with one can equal an ASCII name of a catalog or a
# list. The stand-in is three bytes where the server sees one, so a name that would reach
# NAMEDATALEN (63 bytes) with it is refused: the two would truncate it differently.
_BYTE_STAND_INS = {0xDC80 + b: 0xF780 + b for b in range(0x80)}
_STAND_IN = re.compile("[\uf780-\uf7ff]")
# Where a name may run: a quoted identifier, or a run of characters that may form one.
_NAME_RUNS = re.compile(r'"[^"]*"|[\w$\x80-\U0010ffff]+')


def _too_long_with_stand_ins(parsed: str) -> bool:
    """Whether a possible name holding a stand-in is over NAMEDATALEN - 1 bytes as parsed."""
    return any(
        _STAND_IN.search(run) and len(run.strip('"').encode("utf-8")) > 63
        for run in _NAME_RUNS.findall(parsed)
    )


class _Target:
    """The relation an UPDATE, DELETE or MERGE changes, as column references name it."""

    def __init__(self, relation: Any, *, alone: bool) -> None:
        alias = str(relation.alias.aliasname) if relation.HasField("alias") else ""
        self.name = alias or str(relation.relname)
        self.schema = "" if alias else str(relation.schemaname)
        # Without other relations in scope, a bare column name can only be the target's.
        self.alone = alone
        # Whether judging a condition on it read the value of a constant (``LIKE '%'``).
        self.literal = False

    def named(self, ref: Any, *, outer: bool) -> bool:
        """Whether a ``ColumnRef`` names a column of the target (``outer``: not inside a
        subquery, where a bare name resolves to the subquery's relations first)."""
        fields = [_unwrap(f) for f in ref.fields]
        names = [str(f.sval) if _name(f) == "String" else "*" for f in fields]
        if len(names) == 1:
            return outer and self.alone
        if len(names) == 2:
            return names[0] == self.name
        return names[-2] == self.name and (not self.schema or names[-3] == self.schema)


def _mentions(node: Any, target: _Target, outer: bool) -> bool:
    """Whether ``node`` reads a column of the target's row, a subquery's WHERE counting only
    where it restricts the target itself (``x IN (SELECT ...)`` counts by its ``x``)."""
    node = _unwrap(node)
    kind = _name(node)
    if kind == "ColumnRef":
        return target.named(node, outer=outer)
    if kind == "SubLink":
        if node.HasField("testexpr") and _mentions(node.testexpr, target, outer):
            return True
        select = _unwrap(node.subselect)
        return (
            _name(select) == "SelectStmt"
            and select.HasField("where_clause")
            and _restricts(select.where_clause, target, outer=False)
        )
    return any(_mentions(child, target, outer) for child in _children(node))


def _has_bool(node: Any) -> bool:
    """Whether ``node`` holds AND/OR/NOT or a CASE outside subqueries: a leaf comparison built of
    those (``(t.a = 1 OR true) = true``) is not judged, it counts as unrestricted."""
    kind = _name(node)
    if kind in ("BoolExpr", "CaseExpr", "BooleanTest", "CoalesceExpr", "MinMaxExpr"):
        return True
    if kind == "SubLink":
        return False
    return any(_has_bool(child) for child in _children(node))


def _restricts(expr: Any, target: _Target, *, outer: bool = True) -> bool:
    """Whether a condition keeps only some of the target's own rows: it reads a column of the
    target and is not trivially true. Conservative: what it cannot judge counts as not.

    ``AND`` restricts when one branch does, ``OR`` when every branch does; a leaf restricts when
    it is a comparison, ``IN``, ``LIKE``, ``BETWEEN``, null test, function call or boolean column
    that reads the target, compares no expression with itself, and holds no nested logic.
    ``EXISTS (subquery)`` restricts when the subquery's WHERE restricts the target by name.
    """
    expr = _unwrap(expr)
    kind = _name(expr)
    if kind == "CurrentOfExpr":
        return True  # WHERE CURRENT OF: one row
    if kind == "BoolExpr":
        if expr.boolop == _AND:
            return any(_restricts(arg, target, outer=outer) for arg in expr.args)
        if expr.boolop == _OR:
            return all(_restricts(arg, target, outer=outer) for arg in expr.args)
        # NOT: only of a plain comparison or boolean column (NOT of NOT IN, of a self
        # comparison or of logic may keep every row).
        (arg,) = (_unwrap(a) for a in expr.args)
        return (
            _name(arg) == "ColumnRef" or (_name(arg) == "A_Expr" and arg.kind == _AEXPR_OP)
        ) and _restricts(arg, target, outer=outer)
    if kind == "SubLink":
        if expr.sub_link_type == _EXISTS:
            return _mentions(expr, target, outer)
        if expr.sub_link_type == _ANY and expr.HasField("testexpr"):
            testexpr = _unwrap(expr.testexpr)
            return not _has_bool(testexpr) and _mentions(testexpr, target, outer)
        return False  # ALL (NOT IN), scalar: an empty subquery may keep every row
    if kind == "A_Expr":
        if expr.kind == _AEXPR_OP_ALL:
            return False  # <> ALL of an empty array keeps every row
        if _same(expr.lexpr, expr.rexpr, target, outer):
            return False  # x = x, t.x = x, x IS NOT DISTINCT FROM x, ...
        if expr.kind in _LIKE_KINDS:
            target.literal = target.literal or _is_constant(expr.rexpr)
            if set(_string(expr.rexpr) or "_") <= {"%"}:
                return False  # LIKE '%' keeps every row that has a value
    elif kind == "NullTest" and expr.nulltesttype == _IS_NOT_NULL:
        return False  # keeps every row of a NOT NULL column
    elif kind not in ("ColumnRef", "NullTest", "FuncCall"):
        return False
    return not _has_bool(expr) and _mentions(expr, target, outer)


def _unrestricted_writes(node: Any, kind: str) -> tuple[list[str], bool]:
    """Why an UPDATE, DELETE or MERGE may change every row of its target (empty if it cannot),
    and whether that turned on the value of a constant."""
    command = _command_name(kind)
    if kind == "MergeStmt":
        target = _Target(node.relation, alone=False)
        joined = _restricts(node.join_condition, target)
        causes = []
        for clause in map(_unwrap, node.merge_when_clauses):
            if clause.command_type not in (_CMD_UPDATE, _CMD_DELETE):
                continue
            if clause.matched and joined:
                continue
            if clause.HasField("condition") and _restricts(clause.condition, target):
                continue
            action = "DELETE" if clause.command_type == _CMD_DELETE else "UPDATE"
            causes.append(f"MERGE ... THEN {action} with an ON that does not restrict the target")
        return causes, target.literal
    others = node.using_clause if kind == "DeleteStmt" else node.from_clause
    target = _Target(node.relation, alone=not others)
    if not node.HasField("where_clause"):
        return [f"{command} without WHERE"], False
    if not _restricts(node.where_clause, target):
        return [f"{command} with a WHERE that does not restrict the target's rows"], target.literal
    return [], target.literal


def _qualified(parts: list[str]) -> str:
    return ".".join(parts)


class _Walk:
    """The facts gathered while walking one top-level statement."""

    def __init__(self) -> None:
        self.causes: dict[str, str] = {}
        self.kinds: set[str] = set()
        self.tables: set[str] = set()
        self.functions: set[str] = set()
        self.columns: set[str] = set()
        self.executes: list[str] = []
        self.read_write = ""
        self.resolvable: set[str] = set()
        self.unlisted: set[str] = set()
        self.fields: set[str] = set()
        self.operators: set[str] = set()
        self.cast_types: set[str] = set()
        # Whether a fact turned on the value of a constant (``set_config('role', ...)``).
        self.literal = False

    def add(self, cls: str, cause: str) -> None:
        self.causes.setdefault(cls, cause)

    def _writable(self, cause: str) -> None:
        self.read_write = self.read_write or cause

    def walk(self, root: Any) -> None:
        # (node, runs): ``runs`` is False under EXPLAIN without ANALYZE, where the explained
        # statement is planned but not executed.
        stack = [(root, True)]
        while stack:
            node, runs = stack.pop()
            kind = _name(node)
            if kind == "ExplainStmt":
                self.kinds.add(kind)
                if node.HasField("query"):
                    stack.append((_unwrap(node.query), runs and _explain_analyzes(node)))
                continue
            self._visit(node, kind, runs)
            stack.extend((child, runs) for child in _children(node))

    def _visit(self, node: Any, kind: str, runs: bool) -> None:
        if kind.endswith("Stmt"):
            self.kinds.add(kind)
            self._statement(node, kind, runs)
        elif kind == "RangeVar":
            parts = [p for p in (node.schemaname, node.relname) if p]
            self.tables.add(_qualified(parts))
            self._dotted(parts, "relation")
        elif kind == "FuncCall":
            self._function(node)
        elif kind in _SQL_JSON_CALLS:
            # PostgreSQL 15 and older have no SQL/JSON constructors: their grammar reads
            # JSON_ARRAY(1, 2) as a call of a function json_array, which may be a user's.
            self._call([_SQL_JSON_CALLS[kind]], node)
        elif kind == "ColumnRef":
            last = _unwrap(node.fields[-1]) if node.fields else None
            if last is not None:
                self.columns.add("*" if _name(last) == "A_Star" else str(last.sval))
                if len(node.fields) > 1 and _name(last) == "String":
                    self.fields.add(str(last.sval))
                    self._dotted([str(last.sval)], "field")
        elif kind == "A_Expr":
            parts = [str(_unwrap(p).sval) for p in node.name]
            if parts and _OPERATOR.fullmatch(parts[-1]):
                self.operators.add(_qualified(parts))
            # BETWEEN and its kin call the comparison operators of the operands' types.
            self.operators.update(_BETWEEN_OPERATORS.get(node.kind, ()))
        elif kind == "TypeCast" and node.HasField("type_name"):
            names = [str(_unwrap(p).sval) for p in node.type_name.names]
            self.cast_types.add(_qualified(names))
            self._dotted(names, "type")
        elif kind == "SortBy" and node.use_op:
            # ORDER BY x USING op sorts with that operator.
            self.operators.add(_qualified([str(_unwrap(p).sval) for p in node.use_op]))
        elif kind == "CaseExpr" and node.HasField("arg"):
            self.operators.add("=")  # CASE x WHEN y compares with x = y
        elif kind == "A_Indirection":
            names = [
                str(item.sval) for item in map(_unwrap, node.indirection) if _name(item) == "String"
            ]
            self.fields.update(names)
            self._dotted(names, "field")
        elif kind == "ResTarget" and node.name:
            # INSERT column lists and UPDATE SET targets; a SELECT alias is also a name here.
            self.columns.add(str(node.name))
        elif kind == "DefElem" and node.defname == "transaction_read_only":
            # BEGIN / SET TRANSACTION / SET SESSION CHARACTERISTICS ... READ WRITE; several
            # modes may be given and the last wins, so any READ WRITE counts.
            self.literal = self.literal or (node.HasField("arg") and _is_constant(node.arg))
            if not (node.HasField("arg") and _is_true(node.arg)):
                self._writable("READ WRITE")
        elif kind == "AlterTableCmd":
            subtype = _ALTER_TABLE_TYPE.Name(node.subtype)
            cause = f"ALTER TABLE ... {_command_name(subtype[3:])}"
            if subtype.startswith("AT_Drop"):
                self.add("drop", cause)
            if subtype in _PRIVILEGE_TABLE_COMMANDS:
                self.add("privilege", cause)

    def _statement(self, node: Any, kind: str, runs: bool) -> None:
        command = _command_name(kind)
        known = False
        if kind in _WRITE:
            known = True
            if runs:
                self.add("write", command)
            if kind in ("UpdateStmt", "DeleteStmt", "MergeStmt") and runs:
                causes, literal = _unrestricted_writes(node, kind)
                self.literal = self.literal or literal
                for cause in causes:
                    self.add("unbounded-write", cause)
        if kind == "SelectStmt" and node.HasField("into_clause"):
            if runs:
                self.add("ddl", "SELECT INTO")
                self.add("write", "SELECT INTO")
        if kind == "CopyStmt":
            self._copy(node, runs)
        if kind == "TruncateStmt":
            known = True
            self.add("truncate", command)
        if kind.startswith("Drop") or kind == "DropStmt":
            known = True
            self.add("drop", command)
        if kind.startswith(("Create", "Alter", "Drop")) or kind in _DDL:
            known = True
            if runs:
                self.add("ddl", command)
            if kind == "CreateTableAsStmt" and runs:
                self.add("write", command)
        if kind in _PRIVILEGE:
            known = True
            self.add("privilege", command)
        if kind in _ADMIN:
            known = True
            self.add("admin", command)
        if kind in _OPAQUE:
            known = True
            self.add("opaque-code", command)
        if kind == "VariableSetStmt":
            self._setting(str(node.name).lower(), f"SET {node.name}")
            self._read_only_setting(node)
        if kind == "AlterSystemStmt":
            # It changes settings for every later session (and needs no writable transaction).
            self._writable("ALTER SYSTEM")
        if kind in ("DoStmt", "CallStmt"):
            # A body the gateway does not read may change the setting and COMMIT: the rest of
            # the body then runs in a read-write transaction.
            self._writable(f"{command} (its body may turn it off and commit)")
        if kind == "ExecuteStmt":
            self.executes.append(str(node.name))
        if not known and kind not in _HARMLESS:
            self.add("opaque-code", f"{command} (a statement kind guardrails does not know)")

    def _copy(self, node: Any, runs: bool) -> None:
        direction = "FROM" if node.is_from else "TO"
        if node.is_from and runs:
            self.add("write", "COPY FROM")
        if node.is_program:
            self.add("file-access", f"COPY ... {direction} PROGRAM")
            self.add("opaque-code", f"COPY ... {direction} PROGRAM")
        elif node.filename:
            self.add("file-access", f"COPY ... {direction} a server file")

    def _read_only_setting(self, node: Any) -> None:
        """SET (also inside ALTER ROLE/DATABASE/FUNCTION) of a read-only setting to anything
        but true. RESET and DEFAULT return to the value the session started with, which the
        gateway makes ``on`` with a startup parameter."""
        name = str(node.name).lower()
        if name not in _READ_ONLY_SETTINGS or node.kind in (
            _VAR_SET_DEFAULT,
            _VAR_RESET,
            _VAR_RESET_ALL,
        ):
            return
        if node.kind == _VAR_SET_VALUE and len(node.args) == 1:
            self.literal = self.literal or _is_constant(node.args[0])
            if _is_true(node.args[0]):
                return
        self._writable(f"SET {name}")

    def _setting(self, setting: str, cause: str) -> None:
        if setting in _PRIVILEGE_SETTINGS:
            self.add("privilege", cause)
        elif setting in _ADMIN_SETTINGS:
            self.add("admin", cause)

    def _dotted(self, parts: list[str], what: str) -> None:
        """A quoted name with a dot reads like a qualified one to the catalog look-up, which
        would then miss the object: no catalog answer is trusted for it."""
        if any("." in part for part in parts):
            self.add("opaque-code", f"{_qualified(parts)} (a {what} name holding a dot)")

    def _function(self, node: Any) -> None:
        parts = [str(_unwrap(p).sval) for p in node.funcname]
        if parts == ["pg_catalog", "json_object"]:
            # The grammar qualifies json_object(...) itself since PostgreSQL 16; an older
            # server's resolves the name on the search path, where a user's overload may win.
            parts = parts[1:]
        self._call(parts, node)

    def _call(self, parts: list[str], node: Any) -> None:
        written = _qualified(parts)
        self.functions.add(written)
        name = parts[-1]
        label = f"{name}()"
        builtin = len(parts) == 1 or parts[-2] == "pg_catalog"
        if any("." in part for part in parts):
            # A quoted name with a dot reads like a qualified one: no catalog answer is trusted.
            self.add("opaque-code", f"{written}() (a function name holding a dot)")
        if len(parts) == 1 or not builtin:
            # Any schema may hold a function of this name (or a better-matching overload).
            self.resolvable.add(written)
        # Classes go by the bare name whatever the schema: a look-alike in another schema is
        # refused too, which errs on the safe side.
        classes = FUNCTION_CLASSES.get(name, ())
        for cls in classes:
            self.add(cls, label)
        if not classes and not (builtin and name in HARMLESS_FUNCTIONS):
            self.unlisted.add(written)
        if name.startswith("dblink"):
            # It runs SQL in a session of its own, which the read-only mode does not cover.
            self._writable(f"{label} (a session of its own)")
        if name in _BY_ARGUMENT:
            self._set_config(node)

    def _set_config(self, node: Any) -> None:
        self.literal = self.literal or bool(node.args and _is_constant(node.args[0]))
        setting = _string(node.args[0]) if node.args else None
        if setting is None:
            self.add("privilege", "set_config() of a computed setting")
            self.add("opaque-code", "set_config() of a computed setting")
            self._writable("set_config() of a computed setting")
        else:
            if setting.strip().lower() in _READ_ONLY_SETTINGS:
                self._writable(f"set_config('{setting}')")
            # Judged as if padded names were the real one: erring on the safe side costs a
            # refusal of a call PostgreSQL would reject anyway.
            self._setting(setting.strip().lower(), f"set_config('{setting}')")


def _facts(raw: Any, version: int) -> tuple[StatementFacts, bool]:
    """One statement's facts, and whether any of them turned on the value of a constant."""
    root = _unwrap(raw.stmt)
    walk = _Walk()
    walk.walk(root)
    kind = _name(root)
    has_where = False
    where_constant_true = False
    if kind in ("UpdateStmt", "DeleteStmt"):
        has_where = root.HasField("where_clause")
        where_constant_true = has_where and bool(_unrestricted_writes(root, kind)[0])
    deallocates: tuple[str, ...] = ()
    if kind == "DeallocateStmt":
        deallocates = (str(root.name) or "*",)
    elif kind == "DiscardStmt" and root.target == _DISCARD_ALL:
        deallocates = ("*",)
    causes = dict(walk.causes)
    other_opaque = causes.get("opaque-code", "")
    if walk.unlisted:
        first = min(walk.unlisted)
        causes.setdefault(
            "opaque-code",
            f"{first}() (a function that no built-in list covers: VOLATILE unless the"
            " target's catalog says otherwise)",
        )
    facts = StatementFacts(
        kind=kind,
        command=_command_name(kind),
        kinds=frozenset(walk.kinds),
        causes=causes,
        tables=frozenset(walk.tables),
        functions=frozenset(walk.functions),
        resolvable_functions=frozenset(walk.resolvable),
        unlisted_functions=frozenset(walk.unlisted),
        field_names=frozenset(walk.fields),
        operators=frozenset(walk.operators),
        cast_types=frozenset(walk.cast_types),
        other_opaque_cause=other_opaque,
        columns=frozenset(walk.columns),
        has_where=has_where,
        where_constant_true=where_constant_true,
        prepares=str(root.name) if kind == "PrepareStmt" else "",
        executes=tuple(walk.executes),
        deallocates=deallocates,
        read_write=walk.read_write,
        text=_normalise(raw, version),
    )
    return facts, walk.literal


# Statements after which the next statement of the same message runs in a new transaction.
_TRANSACTION_ENDS = frozenset(
    {
        pg_query_pb2.TRANS_STMT_COMMIT,
        pg_query_pb2.TRANS_STMT_ROLLBACK,
        pg_query_pb2.TRANS_STMT_PREPARE,
        pg_query_pb2.TRANS_STMT_COMMIT_PREPARED,
        pg_query_pb2.TRANS_STMT_ROLLBACK_PREPARED,
    }
)


def _after_transaction_end(
    statements: tuple[StatementFacts, ...], tree: Any
) -> tuple[StatementFacts, ...]:
    """``statements`` with every statement that follows a transaction end in the same text
    marked as a way to turn read-only off.

    A new transaction takes its mode from ``default_transaction_read_only`` as it is then. Code
    the gateway does not see (a view's function, a cast) may have turned it off earlier in the
    message; the server reports that only before its ReadyForQuery, after the whole message
    ran, so the gateway cannot stop a statement that the same message runs in a new transaction.
    """
    ended = False
    marked = []
    for facts, raw in zip(statements, tree.stmts, strict=True):
        if ended and not facts.read_write:
            facts = attrs.evolve(
                facts,
                read_write=f"{facts.command} after a transaction end in the same message (its"
                " transaction may start read-write; send it as a message of its own)",
            )
        marked.append(facts)
        root = _unwrap(raw.stmt)
        ended = ended or (_name(root) == "TransactionStmt" and root.kind in _TRANSACTION_ENDS)
    return tuple(marked)


@functools.lru_cache(maxsize=256)
def ends_transaction(text: str) -> bool:
    """Whether ``text`` holds a statement that ends the transaction (``COMMIT``, ``ROLLBACK``,
    ``PREPARE TRANSACTION``, ...): what runs after it runs in a new transaction. A text that
    does not parse ends nothing (the server rejects it too)."""
    try:
        tree = pg_query.parse(text)
    except (pg_query.PgQueryError, RecursionError, UnicodeEncodeError):
        return False
    return any(
        _name(root) == "TransactionStmt" and root.kind in _TRANSACTION_ENDS
        for root in (_unwrap(raw.stmt) for raw in tree.stmts)
    )


def _normalise(raw: Any, version: int) -> str:
    tree = pg_query_pb2.ParseResult(version=version)
    tree.stmts.add().stmt.CopyFrom(raw.stmt)
    try:
        return pg_query.deparse(tree)
    except pg_query.PgQueryError:
        # A few statements have no deparser; their kind still names them.
        return _command_name(_name(_unwrap(raw.stmt)))


class PostgresDialect:
    """Analyses PostgreSQL statements with libpg_query; answers are cached by text."""

    name = "postgresql"

    def __init__(self, cache_size: int = _CACHE_SIZE) -> None:
        self._cache: OrderedDict[str, Analysis] = OrderedDict()
        self._cache_size = cache_size

    def function_catalog(
        self,
        reactor: Any,
        *,
        target: str,
        user: str,
        password: str | None,
        sslmode: str,
        connect: Callable[..., Any] | None = None,
    ) -> FunctionCatalog:
        """The target's catalog of functions, read as ``user`` (see :class:`hoopgw.sql.Dialect`);
        ``connect`` opens its TCP connection (a network agent's, see
        :attr:`hoopgw.plugin.PluginContext.connect_upstream`), None for directly."""
        from hoopgw_postgres.catalog import FunctionCatalog

        return FunctionCatalog(
            reactor, target=target, user=user, password=password, sslmode=sslmode, connect=connect
        )

    def analyze(self, text: str) -> Analysis:
        """Analyse ``text``, one or several statements (see :class:`hoopgw.sql.Dialect`)."""
        cached = self._cache.get(text)
        if cached is not None:
            self._cache.move_to_end(text)
            return cached
        analysis = self._analyze(text)
        if len(text) <= _CACHEABLE_LENGTH:
            self._cache[text] = analysis
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return analysis

    def shape(self, text: str) -> str | None:
        """A key that ``text`` shares exactly with the texts PostgreSQL parses to the same
        tree but for the values of constants and the positions of tokens (see
        :mod:`hoopgw_postgres.shape`); None when the text is not judged by its tree alone
        (too long to be worth a key, or one :meth:`analyze` refuses before parsing).

        The analysis of a text depends on nothing else (the protocol refuses the lexing
        settings libpg_query does not read as the server does), so it holds for every text
        of its shape unless :attr:`~hoopgw.sql.Analysis.reads_literals`."""
        if len(text) > _CACHEABLE_LENGTH:
            return None
        parsed = _parseable(text)
        if isinstance(parsed, Analysis):
            return None
        try:
            return tree_key(parsed)
        except UnicodeEncodeError:
            return None

    def _analyze(self, text: str) -> Analysis:
        parsed = _parseable(text)
        if isinstance(parsed, Analysis):
            return parsed
        try:
            tree = pg_query.parse(parsed)
            facts = [_facts(raw, tree.version) for raw in tree.stmts]
            statements = _after_transaction_end(tuple(f for f, _ in facts), tree)
        except pg_query.PgQueryError as exc:
            return Analysis(error=exc.message)
        except RecursionError:
            return Analysis(error="the statement is nested too deeply to analyse")
        except UnicodeEncodeError:
            return Analysis(error="the text is not valid UTF-8")
        return Analysis(statements=statements, reads_literals=any(lit for _, lit in facts))


def _parseable(text: str) -> str | Analysis:
    """``text`` as the parser takes it, or the analysis of a text it must not be given."""
    if "\0" in text:
        return Analysis(error="the text contains a NUL character")
    parsed = text if text.isascii() else text.translate(_BYTE_STAND_INS)
    if parsed != text and _too_long_with_stand_ins(parsed):
        return Analysis(
            error="a name with bytes that are not UTF-8 is too long to be judged exactly"
        )
    return parsed
