"""Tests for :mod:`hoopgw.plugin`: option validation and plugin loading."""

from __future__ import annotations

import pytest

from hoopgw.errors import ConfigError, PluginError
from hoopgw.plugin import Option, available_plugins, load_plugin_class, validate_options

OPTIONS = (
    Option(name="limit", type=int, help="Most rows returned.", default=100),
    Option(name="deny", type=list, help="Statements to refuse."),
    Option(name="mode", type=str, help="How to mask.", default="hash"),
    Option(name="ratio", type=(int, float), help="A share.", default=0.5),
    Option(
        name="level",
        type=int,
        help="Strictness.",
        default=1,
        check=lambda v: None if 0 <= v <= 3 else "must be between 0 and 3",
    ),
)


def validate(table: dict) -> dict:
    return validate_options("guard", OPTIONS, table, connection="pg")


def test_defaults_are_filled_in() -> None:
    assert validate({"deny": ["drop"]}) == {
        "limit": 100,
        "deny": ["drop"],
        "mode": "hash",
        "ratio": 0.5,
        "level": 1,
    }


def test_given_values_are_kept() -> None:
    values = validate({"deny": [], "limit": 5, "mode": "redact", "ratio": 2, "level": 3})
    assert (values["limit"], values["mode"], values["ratio"], values["level"]) == (
        5,
        "redact",
        2,
        3,
    )


def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        validate({"deny": [], "limt": 5})
    assert info.value.key == "guard.limt"
    assert info.value.connection == "pg"
    assert "known: deny, level, limit, mode, ratio" in str(info.value)


def test_unknown_key_without_options() -> None:
    with pytest.raises(ConfigError, match="known: none"):
        validate_options("quiet", (), {"x": 1}, connection="pg")


def test_wrong_type_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        validate({"deny": [], "limit": "5"})
    assert info.value.key == "guard.limit"
    assert "expected int, got str" in str(info.value)


def test_bool_is_not_accepted_for_int() -> None:
    with pytest.raises(ConfigError) as info:
        validate({"deny": [], "limit": True})
    assert info.value.key == "guard.limit"
    assert "expected int, got bool" in str(info.value)


def test_bool_is_accepted_where_bool_is_declared() -> None:
    options = (Option(name="on", type=bool, help="Switch.", default=False),)
    assert validate_options("p", options, {"on": True}, connection="pg") == {"on": True}


def test_tuple_of_types_names_each() -> None:
    with pytest.raises(ConfigError, match="expected int or float, got str"):
        validate({"deny": [], "ratio": "half"})


def test_missing_required_option() -> None:
    with pytest.raises(ConfigError) as info:
        validate({})
    assert info.value.key == "guard.deny"
    assert "required: Statements to refuse." in str(info.value)


def test_check_function_rejects() -> None:
    with pytest.raises(ConfigError) as info:
        validate({"deny": [], "level": 7})
    assert info.value.key == "guard.level"
    assert "must be between 0 and 3" in str(info.value)


def test_required_property() -> None:
    assert OPTIONS[1].required
    assert not OPTIONS[0].required


def test_installed_plugins_are_listed_without_import() -> None:
    assert "recording" in available_plugins()


def test_load_plugin_class() -> None:
    cls = load_plugin_class("recording")
    assert isinstance(cls.options, tuple)


def test_load_unknown_plugin_names_installed_ones() -> None:
    with pytest.raises(
        PluginError, match=r"plugin 'nope' is not installed \(installed: .*recording"
    ):
        load_plugin_class("nope")
