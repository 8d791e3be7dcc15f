"""The PostgreSQL :class:`~hoopgw.sql.Dialect`: statements parsed by PostgreSQL's own grammar.

The parser is libpg_query (BSD-3-Clause), bundled by the ``pg-query-python`` binding, whose
parse tree this module reads as plain dicts decoded from libpg_query's JSON
(:mod:`hoopgw_postgres.tree`). Each statement's tree is walked generically, node by node, so a
statement is classified by every node it holds however deeply nested: data-modifying CTEs,
``EXPLAIN ANALYZE``, ``COPY (query)``, ``CREATE RULE`` actions, ``PREPARE`` bodies, ``SELECT
INTO`` and function calls anywhere. A statement's normalised text is libpg_query's deparse of
its tree, in C.

Texts of one shape (:meth:`PostgresDialect.shape`: the same tree but for constant values) have
the same facts unless a fact turned on a constant's value, which the walk notes
(:attr:`~hoopgw.sql.Analysis.reads_literals`): the plugins' analysis cache by shape relies on
both.

A statement kind this module does not know falls in ``opaque-code``: a newer server's statement
is refused under a policy that denies it rather than waved through.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from importlib import resources
from typing import Any

import attrs

from hoopgw.sql import DENY_CLASSES, Analysis, FunctionCatalog, StatementFacts
from hoopgw_postgres.shape import tree_key
from hoopgw_postgres.tree import Node, ParseError, children, deparsed_statements, parse, unwrap

__all__ = [
    "FUNCTION_CLASSES",
    "HARMLESS_FUNCTIONS",
    "REVIEWED_VOLATILE",
    "SQL_JSON_FUNCTIONS",
    "PostgresDialect",
    "ends_transaction",
]

# Larger texts (bulk INSERTs) get no shape: not worth a key kept in memory.
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
_VAR_SET_VALUE = "VAR_SET_VALUE"
_VAR_RESETS = frozenset({"VAR_SET_DEFAULT", "VAR_RESET", "VAR_RESET_ALL"})
_LIKE_KINDS = frozenset({"AEXPR_LIKE", "AEXPR_ILIKE", "AEXPR_SIMILAR"})
_OPERATOR = re.compile(r"[-+*/<>=~!@#%^&|`?]+")
# The operators PostgreSQL builds a BETWEEN from (parse_expr.c, transformAExprBetween).
_BETWEEN_OPERATORS = {
    "AEXPR_BETWEEN": (">=", "<="),
    "AEXPR_BETWEEN_SYM": (">=", "<="),
    "AEXPR_NOT_BETWEEN": ("<", ">"),
    "AEXPR_NOT_BETWEEN_SYM": ("<", ">"),
}
# The kinds of value a constant (``A_Const``) may hold.
_CONSTANT_KINDS = ("ival", "fval", "boolval", "sval", "bsval")


def _command_name(kind: str) -> str:
    if kind in _COMMANDS:
        return _COMMANDS[kind]
    words = re.findall(r"[A-Z][a-z]*", kind.removesuffix("Stmt"))
    return " ".join(words).upper()


def _node(fields: dict[str, Any], name: str) -> Node | None:
    """The node a field of any node kind holds, if it is set."""
    value = fields.get(name)
    return unwrap(value) if value else None


def _nodes(fields: dict[str, Any], name: str) -> list[Node]:
    """The nodes a list field holds (empty entries left out)."""
    return [node for item in fields.get(name, ()) for node in item.items()]


def _sval(node: Node | None) -> str:
    """The text of a ``String`` node (a name), empty for anything else."""
    if node is None or node[0] != "String":
        return ""
    return str(node[1].get("sval", ""))


def _names(fields: dict[str, Any], name: str) -> list[str]:
    """A list field of ``String`` nodes (a qualified name), as its parts."""
    return [_sval(node) for node in _nodes(fields, name)]


def _string(node: Node | None) -> str | None:
    """The text of a string constant (``'x'``), or None if ``node`` is anything else."""
    if node is not None and node[0] == "A_Const" and "sval" in node[1]:
        return str(node[1]["sval"].get("sval", ""))
    return None


def _is_constant(node: Node | None) -> bool:
    return node is not None and node[0] == "A_Const"


def _is_true(node: Node | None) -> bool:
    """Whether a setting's value is a constant PostgreSQL reads as boolean true."""
    if node is None or node[0] != "A_Const":
        return False
    fields = node[1]
    if "sval" in fields:
        return str(fields["sval"].get("sval", "")).lower() in _TRUE_WORDS
    if "ival" in fields:
        return int(fields["ival"].get("ival", 0)) == 1
    if "boolval" in fields:
        return bool(fields["boolval"].get("boolval", False))
    return False


def _option_true(elem: dict[str, Any]) -> bool:
    """Whether a Boolean option (a ``DefElem``) may be on: PostgreSQL's ``defGetBoolean``
    takes no argument, ``true``/``on``/``1`` as on; an argument we cannot read counts as on."""
    arg = _node(elem, "arg")
    if arg is None:
        return True
    kind, fields = arg
    if kind == "String":
        return str(fields.get("sval", "")).lower() not in _FALSE_WORDS
    if kind == "Boolean":
        return bool(fields.get("boolval", False))
    if kind == "Integer":
        return bool(fields.get("ival", 0))
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


def _explain_analyzes(explain: dict[str, Any]) -> bool:
    """Whether EXPLAIN runs the statement it explains.

    PostgreSQL applies options in order, so the last ``ANALYZE`` wins; the gateway counts the
    statement as run when *any* ``ANALYZE`` may be on, which covers the server's rule and
    needs no model of it (``EXPLAIN (ANALYZE false, ANALYZE true)`` runs).
    """
    return any(
        _option_true(elem)
        for kind, elem in _nodes(explain, "options")
        if kind == "DefElem" and elem.get("defname", "") == "analyze"
    )


def _shape(value: Any, target: _Target, outer: bool, values: bool) -> Any:
    """A value's structure without source positions: equal shapes are the same expression. A
    column of ``target`` has one shape however it is qualified (``t.a`` and ``a``). Without
    ``values``, a constant's shape is its kind alone (``1`` and ``2`` are alike)."""
    if isinstance(value, dict):
        if len(value) == 1:
            ((key, fields),) = value.items()
            if key == "ColumnRef" and target.named(fields, outer=outer):
                return ("target column", _sval(_nodes(fields, "fields")[-1]) or "*")
            if key == "A_Const" and not values:
                which = next((k for k in _CONSTANT_KINDS if k in fields), None)
                return ("A_Const", which, fields.get("isnull", False))
        return {k: _shape(v, target, outer, values) for k, v in value.items() if k != "location"}
    if isinstance(value, list):
        return [_shape(v, target, outer, values) for v in value]
    return value


def _wrapped(node: Node) -> dict[str, Any]:
    return {node[0]: node[1]}


def _same(left: Node | None, right: Node | None, target: _Target, outer: bool) -> bool:
    """Whether two expressions are the same (``x = x``, ``t.x = x``). When that turns on the
    constants they hold (``x + 1 = x + 1``), the target's judgement reads literals."""
    sides = [{} if node is None else _wrapped(node) for node in (left, right)]
    bare = [_shape(side, target, outer, False) for side in sides]
    if bare[0] != bare[1]:
        return False  # no values of their constants can make them the same
    full = [_shape(side, target, outer, True) for side in sides]
    if full != bare:
        target.literal = True
    return bool(full[0] == full[1])


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

    def __init__(self, relation: dict[str, Any], *, alone: bool) -> None:
        alias = str(relation["alias"].get("aliasname", "")) if "alias" in relation else ""
        self.name = alias or str(relation.get("relname", ""))
        self.schema = "" if alias else str(relation.get("schemaname", ""))
        # Without other relations in scope, a bare column name can only be the target's.
        self.alone = alone
        # Whether judging a condition on it read the value of a constant (``LIKE '%'``).
        self.literal = False

    def named(self, ref: dict[str, Any], *, outer: bool) -> bool:
        """Whether a ``ColumnRef`` names a column of the target (``outer``: not inside a
        subquery, where a bare name resolves to the subquery's relations first)."""
        names = [_sval(f) if f[0] == "String" else "*" for f in _nodes(ref, "fields")]
        if len(names) == 1:
            return outer and self.alone
        if len(names) == 2:
            return names[0] == self.name
        return names[-2] == self.name and (not self.schema or names[-3] == self.schema)


def _mentions(node: Node | None, target: _Target, outer: bool) -> bool:
    """Whether ``node`` reads a column of the target's row, a subquery's WHERE counting only
    where it restricts the target itself (``x IN (SELECT ...)`` counts by its ``x``)."""
    if node is None:
        return False
    kind, fields = node
    if kind == "ColumnRef":
        return target.named(fields, outer=outer)
    if kind == "SubLink":
        if "testexpr" in fields and _mentions(_node(fields, "testexpr"), target, outer):
            return True
        select = _node(fields, "subselect")
        return (
            select is not None
            and select[0] == "SelectStmt"
            and "whereClause" in select[1]
            and _restricts(_node(select[1], "whereClause"), target, outer=False)
        )
    return any(_mentions(child, target, outer) for child in children(node))


def _has_bool(node: Node) -> bool:
    """Whether ``node`` holds AND/OR/NOT or a CASE outside subqueries: a leaf comparison built of
    those (``(t.a = 1 OR true) = true``) is not judged, it counts as unrestricted."""
    kind = node[0]
    if kind in ("BoolExpr", "CaseExpr", "BooleanTest", "CoalesceExpr", "MinMaxExpr"):
        return True
    if kind == "SubLink":
        return False
    return any(_has_bool(child) for child in children(node))


# What the grammar wraps a LIKE or SIMILAR TO pattern in: SIMILAR TO's, and one with ESCAPE,
# go through one of these (``%`` stays a wildcard, or becomes ``.*``).
_PATTERN_FUNCTIONS = (["pg_catalog", "like_escape"], ["pg_catalog", "similar_to_escape"])


def _like_pattern(right: Node | None) -> Node | None:
    """The constant a LIKE, ILIKE or SIMILAR TO pattern is written as, through the grammar's
    escape functions, casts and COLLATE (``'%' ESCAPE '#'``, ``'%'::text``); ``right`` when
    it is something else. A cast that might change the value is read as keeping it, which
    errs on the side of unbounded."""
    while right is not None:
        kind, fields = right
        if kind == "FuncCall" and _names(fields, "funcname") in _PATTERN_FUNCTIONS:
            args = _nodes(fields, "args")
            if not args:
                break
            right = args[0]
        elif kind in ("TypeCast", "CollateClause") and "arg" in fields:
            right = _node(fields, "arg")
        else:
            break
    return right


def _restricts(expr: Node | None, target: _Target, *, outer: bool = True) -> bool:
    """Whether a condition keeps only some of the target's own rows: it reads a column of the
    target and is not trivially true. Conservative: what it cannot judge counts as not.

    ``AND`` restricts when one branch does, ``OR`` when every branch does; a leaf restricts when
    it is a comparison, ``IN``, ``LIKE``, ``BETWEEN``, null test, function call or boolean column
    that reads the target, compares no expression with itself, and holds no nested logic.
    ``EXISTS (subquery)`` restricts when the subquery's WHERE restricts the target by name.
    """
    if expr is None:
        return False
    kind, fields = expr
    if kind == "CurrentOfExpr":
        return True  # WHERE CURRENT OF: one row
    if kind == "BoolExpr":
        args = _nodes(fields, "args")
        if fields.get("boolop") == "AND_EXPR":
            return any(_restricts(arg, target, outer=outer) for arg in args)
        if fields.get("boolop") == "OR_EXPR":
            return all(_restricts(arg, target, outer=outer) for arg in args)
        # NOT: only of a plain comparison or boolean column (NOT of NOT IN, of a self
        # comparison or of logic may keep every row).
        (arg,) = args
        return (
            arg[0] == "ColumnRef" or (arg[0] == "A_Expr" and arg[1].get("kind") == "AEXPR_OP")
        ) and _restricts(arg, target, outer=outer)
    if kind == "SubLink":
        if fields.get("subLinkType") == "EXISTS_SUBLINK":
            return _mentions(expr, target, outer)
        testexpr = _node(fields, "testexpr")
        if fields.get("subLinkType") == "ANY_SUBLINK" and testexpr is not None:
            return not _has_bool(testexpr) and _mentions(testexpr, target, outer)
        return False  # ALL (NOT IN), scalar: an empty subquery may keep every row
    if kind == "A_Expr":
        if fields.get("kind") == "AEXPR_OP_ALL":
            return False  # <> ALL of an empty array keeps every row
        right = _node(fields, "rexpr")
        if _same(_node(fields, "lexpr"), right, target, outer):
            return False  # x = x, t.x = x, x IS NOT DISTINCT FROM x, ...
        if fields.get("kind") in _LIKE_KINDS:
            pattern = _like_pattern(right)
            target.literal = target.literal or _is_constant(pattern)
            if set(_string(pattern) or "_") <= {"%"}:
                return False  # LIKE '%' keeps every row that has a value
    elif kind == "NullTest" and fields.get("nulltesttype") == "IS_NOT_NULL":
        return False  # keeps every row of a NOT NULL column
    elif kind not in ("ColumnRef", "NullTest", "FuncCall"):
        return False
    return not _has_bool(expr) and _mentions(expr, target, outer)


def _unrestricted_writes(node: dict[str, Any], kind: str) -> tuple[list[str], bool]:
    """Why an UPDATE, DELETE or MERGE may change every row of its target (empty if it cannot),
    and whether that turned on the value of a constant."""
    command = _command_name(kind)
    if kind == "MergeStmt":
        target = _Target(node.get("relation", {}), alone=False)
        joined = _restricts(_node(node, "joinCondition"), target)
        causes = []
        for clause_kind, clause in _nodes(node, "mergeWhenClauses"):
            command_type = clause.get("commandType")
            if clause_kind != "MergeWhenClause" or command_type not in ("CMD_UPDATE", "CMD_DELETE"):
                continue
            if clause.get("matched", False) and joined:
                continue
            if "condition" in clause and _restricts(_node(clause, "condition"), target):
                continue
            action = "DELETE" if command_type == "CMD_DELETE" else "UPDATE"
            causes.append(f"MERGE ... THEN {action} with an ON that does not restrict the target")
        return causes, target.literal
    others = node.get("usingClause" if kind == "DeleteStmt" else "fromClause")
    target = _Target(node.get("relation", {}), alone=not others)
    if "whereClause" not in node:
        return [f"{command} without WHERE"], False
    if not _restricts(_node(node, "whereClause"), target):
        return [f"{command} with a WHERE that does not restrict the target's rows"], target.literal
    return [], target.literal


def _qualified(parts: list[str]) -> str:
    return ".".join(parts)


# Nodes that hold no fact, nor do the nodes inside them (a constant holds only its value).
_INERT = frozenset({"String", "Integer", "Float", "Boolean", "BitString", "A_Const", "A_Star"})
# Nodes other than statements that :meth:`_Walk._visit` reads.
_VISITED = frozenset(
    {
        "RangeVar",
        "FuncCall",
        "ColumnRef",
        "A_Expr",
        "TypeCast",
        "SortBy",
        "CaseExpr",
        "A_Indirection",
        "ResTarget",
        "DefElem",
        "AlterTableCmd",
        *_SQL_JSON_CALLS,
    }
)


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
        # Why each UPDATE, DELETE or MERGE that runs may change every row, by node identity.
        self.unrestricted: dict[int, list[str]] = {}

    def add(self, cls: str, cause: str) -> None:
        self.causes.setdefault(cls, cause)

    def _writable(self, cause: str) -> None:
        self.read_write = self.read_write or cause

    def walk(self, root: Node) -> None:
        # (node, runs): ``runs`` is False under EXPLAIN without ANALYZE, where the explained
        # statement is planned but not executed.
        stack = [(root, True)]
        while stack:
            node, runs = stack.pop()
            kind, fields = node
            if kind == "ExplainStmt":
                self.kinds.add(kind)
                query = _node(fields, "query")
                if query is not None:
                    stack.append((query, runs and _explain_analyzes(fields)))
                continue
            if kind in _INERT:
                continue
            if kind in _VISITED or kind.endswith("Stmt"):
                self._visit(fields, kind, runs)
            stack.extend([(child, runs) for child in children(node)])

    def _visit(self, node: dict[str, Any], kind: str, runs: bool) -> None:
        if kind.endswith("Stmt"):
            self.kinds.add(kind)
            self._statement(node, kind, runs)
        elif kind == "RangeVar":
            parts = [p for p in (node.get("schemaname", ""), node.get("relname", "")) if p]
            self.tables.add(_qualified(parts))
            self._dotted(parts, "relation")
        elif kind == "FuncCall":
            self._function(node)
        elif kind in _SQL_JSON_CALLS:
            # PostgreSQL 15 and older have no SQL/JSON constructors: their grammar reads
            # JSON_ARRAY(1, 2) as a call of a function json_array, which may be a user's.
            self._call([_SQL_JSON_CALLS[kind]], node)
        elif kind == "ColumnRef":
            fields = _nodes(node, "fields")
            if fields:
                last = fields[-1]
                self.columns.add("*" if last[0] == "A_Star" else _sval(last))
                if len(fields) > 1 and last[0] == "String":
                    self.fields.add(_sval(last))
                    self._dotted([_sval(last)], "field")
        elif kind == "A_Expr":
            parts = _names(node, "name")
            if parts and _OPERATOR.fullmatch(parts[-1]):
                self.operators.add(_qualified(parts))
            # BETWEEN and its kin call the comparison operators of the operands' types.
            self.operators.update(_BETWEEN_OPERATORS.get(node.get("kind", ""), ()))
        elif kind == "TypeCast" and "typeName" in node:
            names = _names(node["typeName"], "names")
            self.cast_types.add(_qualified(names))
            self._dotted(names, "type")
        elif kind == "SortBy" and node.get("useOp"):
            # ORDER BY x USING op sorts with that operator.
            self.operators.add(_qualified(_names(node, "useOp")))
        elif kind == "CaseExpr" and "arg" in node:
            self.operators.add("=")  # CASE x WHEN y compares with x = y
        elif kind == "A_Indirection":
            names = [_sval(item) for item in _nodes(node, "indirection") if item[0] == "String"]
            self.fields.update(names)
            self._dotted(names, "field")
        elif kind == "ResTarget" and node.get("name"):
            # INSERT column lists and UPDATE SET targets; a SELECT alias is also a name here.
            self.columns.add(str(node["name"]))
        elif kind == "DefElem" and node.get("defname") == "transaction_read_only":
            # BEGIN / SET TRANSACTION / SET SESSION CHARACTERISTICS ... READ WRITE; several
            # modes may be given and the last wins, so any READ WRITE counts.
            arg = _node(node, "arg")
            self.literal = self.literal or _is_constant(arg)
            if not _is_true(arg):
                self._writable("READ WRITE")
        elif kind == "AlterTableCmd":
            subtype = str(node.get("subtype", ""))
            cause = f"ALTER TABLE ... {_command_name(subtype[3:])}"
            if subtype.startswith("AT_Drop"):
                self.add("drop", cause)
            if subtype in _PRIVILEGE_TABLE_COMMANDS:
                self.add("privilege", cause)

    def _statement(self, node: dict[str, Any], kind: str, runs: bool) -> None:
        command = _command_name(kind)
        known = False
        if kind in _WRITE:
            known = True
            if runs:
                self.add("write", command)
            if kind in ("UpdateStmt", "DeleteStmt", "MergeStmt") and runs:
                causes, literal = _unrestricted_writes(node, kind)
                self.unrestricted[id(node)] = causes
                self.literal = self.literal or literal
                for cause in causes:
                    self.add("unbounded-write", cause)
        if kind == "SelectStmt" and "intoClause" in node:
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
            name = str(node.get("name", ""))
            self._setting(name.lower(), f"SET {name}")
            self._read_only_setting(node)
        if kind == "AlterSystemStmt":
            # It changes settings for every later session (and needs no writable transaction).
            self._writable("ALTER SYSTEM")
        if kind in ("DoStmt", "CallStmt"):
            # A body the gateway does not read may change the setting and COMMIT: the rest of
            # the body then runs in a read-write transaction.
            self._writable(f"{command} (its body may turn it off and commit)")
        if kind == "ExecuteStmt":
            self.executes.append(str(node.get("name", "")))
        if not known and kind not in _HARMLESS:
            self.add("opaque-code", f"{command} (a statement kind guardrails does not know)")

    def _copy(self, node: dict[str, Any], runs: bool) -> None:
        direction = "FROM" if node.get("is_from") else "TO"
        if node.get("is_from") and runs:
            self.add("write", "COPY FROM")
        if node.get("is_program"):
            self.add("file-access", f"COPY ... {direction} PROGRAM")
            self.add("opaque-code", f"COPY ... {direction} PROGRAM")
        elif node.get("filename"):
            self.add("file-access", f"COPY ... {direction} a server file")

    def _read_only_setting(self, node: dict[str, Any]) -> None:
        """SET (also inside ALTER ROLE/DATABASE/FUNCTION) of a read-only setting to anything
        but true. RESET and DEFAULT return to the value the session started with, which the
        gateway makes ``on`` with a startup parameter."""
        name = str(node.get("name", "")).lower()
        if name not in _READ_ONLY_SETTINGS or node.get("kind") in _VAR_RESETS:
            return
        args = _nodes(node, "args")
        if node.get("kind") == _VAR_SET_VALUE and len(args) == 1:
            self.literal = self.literal or _is_constant(args[0])
            if _is_true(args[0]):
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

    def _function(self, node: dict[str, Any]) -> None:
        parts = _names(node, "funcname")
        if parts == ["pg_catalog", "json_object"]:
            # The grammar qualifies json_object(...) itself since PostgreSQL 16; an older
            # server's resolves the name on the search path, where a user's overload may win.
            parts = parts[1:]
        self._call(parts, node)

    def _call(self, parts: list[str], node: dict[str, Any]) -> None:
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

    def _set_config(self, node: dict[str, Any]) -> None:
        args = _nodes(node, "args")
        self.literal = self.literal or bool(args and _is_constant(args[0]))
        setting = _string(args[0]) if args else None
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


def _facts(root: Node, text: str | None) -> tuple[StatementFacts, bool]:
    """One statement's facts, and whether any of them turned on the value of a constant.

    :param text: the statement deparsed; None when it has no deparser (its command names it),
        empty when it is not wanted.
    """
    walk = _Walk()
    walk.walk(root)
    kind, node = root
    has_where = False
    where_constant_true = False
    if kind in ("UpdateStmt", "DeleteStmt"):
        has_where = "whereClause" in node
        # The top-level statement runs: the walk judged its WHERE.
        where_constant_true = has_where and bool(walk.unrestricted[id(node)])
    deallocates: tuple[str, ...] = ()
    if kind == "DeallocateStmt":
        deallocates = (str(node.get("name", "")) or "*",)
    elif kind == "DiscardStmt" and node.get("target") == "DISCARD_ALL":
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
        prepares=str(node.get("name", "")) if kind == "PrepareStmt" else "",
        executes=tuple(walk.executes),
        deallocates=deallocates,
        read_write=walk.read_write,
        text=_command_name(kind) if text is None else text,
    )
    return facts, walk.literal


# Statements after which the next statement of the same message runs in a new transaction.
_TRANSACTION_ENDS = frozenset(
    {
        "TRANS_STMT_COMMIT",
        "TRANS_STMT_ROLLBACK",
        "TRANS_STMT_PREPARE",
        "TRANS_STMT_COMMIT_PREPARED",
        "TRANS_STMT_ROLLBACK_PREPARED",
    }
)


def _ends_transaction(root: Node) -> bool:
    return root[0] == "TransactionStmt" and root[1].get("kind") in _TRANSACTION_ENDS


def _after_transaction_end(
    statements: tuple[StatementFacts, ...], roots: list[Node]
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
    for facts, root in zip(statements, roots, strict=True):
        if ended and not facts.read_write:
            facts = attrs.evolve(
                facts,
                read_write=f"{facts.command} after a transaction end in the same message (its"
                " transaction may start read-write; send it as a message of its own)",
            )
        marked.append(facts)
        ended = ended or _ends_transaction(root)
    return tuple(marked)


def _statements(tree: dict[str, Any]) -> list[Node]:
    """The top-level statements of a parse tree.

    :raises ParseError: for a statement without a tree (never met: refused, not skipped).
    """
    roots = [_node(raw, "stmt") for raw in tree.get("stmts", ())]
    if None in roots:
        raise ParseError("a statement without a parse tree")
    return [root for root in roots if root is not None]


def ends_transaction(text: str) -> bool:
    """Whether ``text`` holds a statement that ends the transaction (``COMMIT``, ``ROLLBACK``,
    ``PREPARE TRANSACTION``, ...): what runs after it runs in a new transaction. A text that
    does not parse ends nothing (the server rejects it too). Not cached here: a session may
    cache its own answers, never share them with other sessions (see
    :class:`hoopgw.sql.Dialect`)."""
    try:
        tree = parse(text)
    except (ParseError, RecursionError, UnicodeError):
        return False
    return any(_ends_transaction(root) for root in _statements(tree))


def copy_encodings(text: str) -> frozenset[str]:
    """The encodings the ``ENCODING`` options of the ``COPY`` statements in ``text`` name, as
    written ("" for a COPY without one, whose data is in the client's encoding): the server
    sends such a COPY's data in that encoding, not the client's. Empty when there is no COPY,
    or the text does not parse (the server rejects it too). Not cached here, as
    :func:`ends_transaction` (a session keeps its own answer)."""
    try:
        tree = parse(text)
    except (ParseError, RecursionError, UnicodeError):
        return frozenset()
    return frozenset(
        next(
            (
                _sval(_node(option, "arg")) or str(option.get("arg"))
                for option_kind, option in _nodes(fields, "options")
                if option_kind == "DefElem" and option.get("defname") == "encoding"
            ),
            "",
        )
        for kind, fields in _statements(tree)
        if kind == "CopyStmt"
    )


class PostgresDialect:
    """Analyses PostgreSQL statements with libpg_query. Keeps nothing between calls: it serves
    every session, and plugins cache per principal (:class:`hoopgw.sql.AnalysisCache`)."""

    name = "postgresql"

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
        return self._analyze(text)

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
        except UnicodeError:
            return None

    def analyze_shape(self, text: str) -> Analysis:
        """The analysis of ``text`` as :meth:`analyze` gives it, but with every statement's
        ``text`` left empty (no deparse): what an analysis cache by :meth:`shape`
        keeps for every text of the shape."""
        return self._analyze(text, texts=False)

    def _analyze(self, text: str, *, texts: bool = True) -> Analysis:
        parsed = _parseable(text)
        if isinstance(parsed, Analysis):
            return parsed
        try:
            roots = _statements(parse(parsed))
            normal = deparsed_statements(parsed) if roots and texts else [""] * len(roots)
            facts = [_facts(root, spelling) for root, spelling in zip(roots, normal, strict=True)]
            statements = _after_transaction_end(tuple(f for f, _ in facts), roots)
        except ParseError as exc:
            return Analysis(error=exc.message)
        except RecursionError:
            return Analysis(error="the statement is nested too deeply to analyse")
        except UnicodeError:
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
