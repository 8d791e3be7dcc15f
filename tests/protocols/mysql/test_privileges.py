"""What the upstream login may do: ``SHOW GRANTS`` lines read for privileges that undo read-only."""

from __future__ import annotations

from typing import Any

import pytest
from hoopgw_mysql import privileges
from hoopgw_mysql.privileges import _roles, inspect_login, risky_privileges

from hoopgw.session import UpstreamOptions


def test_global_privileges_that_undo_read_only_are_found() -> None:
    assert risky_privileges(
        [
            "GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION",
            "GRANT SELECT, SUPER, FILE ON *.* TO `ops`@`%`",
            "GRANT ALL PRIVILEGES ON `app`.* TO `app`@`%`",  # one database: fine
            "GRANT USAGE ON *.* TO `reader`@`%` IDENTIFIED BY PASSWORD '*ABC'",
        ]
    ) == {"ALL PRIVILEGES", "SUPER", "FILE"}
    assert risky_privileges(["GRANT SELECT ON `app`.* TO `reader`@`%`"]) == set()


def test_granted_roles_are_followed() -> None:
    assert _roles(["GRANT `admin`, `ops`@`%` TO `agent`@`%`", "GRANT USAGE ON *.* TO `a`@`%`"]) == [
        "`admin`",
        "`ops`@`%`",
    ]


@pytest.mark.parametrize(
    ("grants", "warned"),
    [
        (["GRANT SUPER ON *.* TO `x`@`%`"], True),
        (["GRANT SELECT ON `app`.* TO `x`@`%`"], False),
    ],
)
def test_only_read_only_connections_are_warned_about(
    monkeypatch: pytest.MonkeyPatch, grants: list[str], warned: bool
) -> None:
    monkeypatch.setattr(privileges, "_grants", lambda connection: ("x@%", grants))
    connection: Any = None
    assert bool(inspect_login(connection, UpstreamOptions(read_only=True))) is warned
    assert inspect_login(connection, UpstreamOptions()) == []
