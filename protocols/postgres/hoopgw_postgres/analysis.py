"""The PostgreSQL :class:`~hoopgw.sql.Dialect`: statements parsed by PostgreSQL's own grammar.

The parser is libpg_query (BSD-3-Clause) through the ``pg-query-python`` binding. Each statement's
parse tree is walked generically, node by node, so a statement is classified by every node it
holds however deeply nested: data-modifying CTEs, ``EXPLAIN ANALYZE``, ``COPY (query)``,
``CREATE RULE`` actions, ``PREPARE`` bodies, ``SELECT INTO`` and function calls anywhere.

A statement kind this module does not know falls in ``opaque-code``: a newer server's statement
is refused under a policy that denies it rather than waved through.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import pg_query
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from pg_query import pg_query_pb2

from hoopgw.sql import Analysis, StatementFacts

__all__ = ["PostgresDialect"]

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

_FILE_FUNCTIONS = frozenset(
    {
        "pg_read_file",
        "pg_read_binary_file",
        "pg_stat_file",
        "pg_ls_dir",
        "pg_ls_logdir",
        "pg_ls_waldir",
        "pg_ls_tmpdir",
        "pg_ls_archive_statusdir",
        "pg_ls_logicalsnapdir",
        "pg_ls_logicalmapdir",
        "pg_ls_replslotdir",
        "pg_current_logfile",
        "pg_file_write",
        "pg_file_rename",
        "pg_file_unlink",
        "pg_file_sync",
        "pg_logdir_ls",
        "loread",
        "lowrite",
    }
)
_ADMIN_FUNCTIONS = frozenset(
    {
        "pg_reload_conf",
        "pg_rotate_logfile",
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_promote",
        "pg_switch_wal",
        "pg_create_restore_point",
        "pg_backup_start",
        "pg_backup_stop",
        "pg_start_backup",
        "pg_stop_backup",
        "pg_create_physical_replication_slot",
        "pg_create_logical_replication_slot",
        "pg_drop_replication_slot",
        "pg_copy_physical_replication_slot",
        "pg_copy_logical_replication_slot",
        "pg_wal_replay_pause",
        "pg_wal_replay_resume",
        "pg_log_backend_memory_contexts",
        "pg_stat_reset",
        "pg_stat_reset_shared",
        "pg_stat_reset_single_table_counters",
        "pg_stat_reset_single_function_counters",
        "pg_stat_reset_slru",
        "pg_stat_reset_replication_slot",
        "pg_import_system_collations",
    }
)
# Functions that run SQL given as a string, or reach another server.
_OPAQUE_FUNCTIONS = frozenset(
    {
        "query_to_xml",
        "query_to_xmlschema",
        "query_to_xml_and_xmlschema",
        "ts_stat",
    }
)
_WRITE_FUNCTIONS = frozenset({"setval"})
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
_MESSAGE = FieldDescriptor.TYPE_MESSAGE


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


def _explain_analyzes(explain: Any) -> bool:
    for option in explain.options:
        elem = _unwrap(option)
        if elem.defname != "analyze":
            continue
        if not elem.HasField("arg"):
            return True
        arg = _unwrap(elem.arg)
        if _name(arg) == "String":
            return str(arg.sval).lower() not in _FALSE_WORDS
        if _name(arg) == "Boolean":
            return bool(arg.boolval)
        if _name(arg) == "Integer":
            return bool(arg.ival)
        return True  # an argument we cannot read: assume it runs
    return False


def _constant_true(expr: Any) -> bool:
    """Whether a WHERE clause keeps every row (or none): it reads no column of the row.

    ``OR`` with one such branch and ``AND`` of only such branches count too, as does comparing
    a column with itself. ``WHERE CURRENT OF`` is bounded (one row).
    """
    expr = _unwrap(expr)
    kind = _name(expr)
    if kind == "CurrentOfExpr":
        return False
    if kind == "BoolExpr" and expr.boolop in (_AND, _OR):
        results = [_constant_true(arg) for arg in expr.args]
        return any(results) if expr.boolop == _OR else all(results)
    if kind == "A_Expr" and expr.HasField("lexpr") and expr.HasField("rexpr"):
        left, right = _unwrap(expr.lexpr), _unwrap(expr.rexpr)
        if (
            _name(left) == "ColumnRef"
            and _name(right) == "ColumnRef"
            and left.fields == right.fields
        ):
            return True
    return not any(_name(node) == "ColumnRef" for node in _descendants(expr))


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
        elif kind == "FuncCall":
            self._function(node)
        elif kind == "ColumnRef":
            last = _unwrap(node.fields[-1]) if node.fields else None
            if last is not None:
                self.columns.add("*" if _name(last) == "A_Star" else str(last.sval))
        elif kind == "ResTarget" and node.name:
            # INSERT column lists and UPDATE SET targets; a SELECT alias is also a name here.
            self.columns.add(str(node.name))
        elif kind == "DefElem" and node.defname == "transaction_read_only":
            # BEGIN / SET TRANSACTION / SET SESSION CHARACTERISTICS ... READ WRITE; several
            # modes may be given and the last wins, so any READ WRITE counts.
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
            if kind in ("UpdateStmt", "DeleteStmt") and runs:
                if not node.HasField("where_clause"):
                    self.add("unbounded-write", f"{command} without WHERE")
                elif _constant_true(node.where_clause):
                    self.add("unbounded-write", f"{command} with a constant WHERE")
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
        if node.kind == _VAR_SET_VALUE and len(node.args) == 1 and _is_true(node.args[0]):
            return
        self._writable(f"SET {name}")

    def _setting(self, setting: str, cause: str) -> None:
        if setting in _PRIVILEGE_SETTINGS:
            self.add("privilege", cause)
        elif setting in _ADMIN_SETTINGS:
            self.add("admin", cause)

    def _function(self, node: Any) -> None:
        parts = [str(_unwrap(p).sval) for p in node.funcname]
        self.functions.add(_qualified(parts))
        name = parts[-1]
        label = f"{name}()"
        # Judged by the bare name whatever the schema: a look-alike in another schema is
        # refused too, which errs on the safe side.
        if name in _FILE_FUNCTIONS or name.startswith("lo_"):
            self.add("file-access", label)
        if name in _ADMIN_FUNCTIONS:
            self.add("admin", label)
        if name in _OPAQUE_FUNCTIONS or name.startswith("dblink"):
            self.add("opaque-code", label)
        if name.startswith("dblink"):
            # It runs SQL in a session of its own, which the read-only mode does not cover.
            self._writable(f"{label} (a session of its own)")
        if name in _WRITE_FUNCTIONS:
            self.add("write", label)
        if name == "set_config":
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


def _facts(raw: Any, version: int) -> StatementFacts:
    root = _unwrap(raw.stmt)
    walk = _Walk()
    walk.walk(root)
    kind = _name(root)
    has_where = False
    where_constant_true = False
    if kind in ("UpdateStmt", "DeleteStmt"):
        has_where = root.HasField("where_clause")
        where_constant_true = has_where and _constant_true(root.where_clause)
    deallocates: tuple[str, ...] = ()
    if kind == "DeallocateStmt":
        deallocates = (str(root.name) or "*",)
    elif kind == "DiscardStmt" and root.target == _DISCARD_ALL:
        deallocates = ("*",)
    return StatementFacts(
        kind=kind,
        command=_command_name(kind),
        kinds=frozenset(walk.kinds),
        causes=walk.causes,
        tables=frozenset(walk.tables),
        functions=frozenset(walk.functions),
        columns=frozenset(walk.columns),
        has_where=has_where,
        where_constant_true=where_constant_true,
        prepares=str(root.name) if kind == "PrepareStmt" else "",
        executes=tuple(walk.executes),
        deallocates=deallocates,
        read_write=walk.read_write,
        text=_normalise(raw, version),
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

    def _analyze(self, text: str) -> Analysis:
        if "\0" in text:
            return Analysis(error="the text contains a NUL character")
        try:
            tree = pg_query.parse(text)
            statements = tuple(_facts(raw, tree.version) for raw in tree.stmts)
        except pg_query.PgQueryError as exc:
            return Analysis(error=exc.message)
        except RecursionError:
            return Analysis(error="the statement is nested too deeply to analyse")
        except UnicodeEncodeError:
            return Analysis(error="the text is not valid UTF-8")
        return Analysis(statements=statements)
