"""``hoopgw mcp``'s command line: its arguments, and that other commands never load the SDK."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from hoopgw.cli.mcp import _host_port


def test_listen_is_host_and_port() -> None:
    assert _host_port("127.0.0.1:8765") == ("127.0.0.1", 8765)
    assert _host_port("[::1]:9000") == ("::1", 9000)
    for bad in ("8765", "127.0.0.1:", "127.0.0.1:99999", "h:port"):
        with pytest.raises(argparse.ArgumentTypeError, match="HOST:PORT"):
            _host_port(bad)


def test_other_commands_do_not_import_the_mcp_sdk() -> None:
    # Registering the command must stay cheap: the SDK is imported only when it runs.
    code = (
        "import sys; from hoopgw.cli.main import main; main(['--version']);"
        " sys.exit('mcp' in sys.modules or 'hoopgw.mcp.server' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
