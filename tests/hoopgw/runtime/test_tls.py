from __future__ import annotations

import os
from pathlib import Path

import pytest
import twisted.test
from twisted.internet import ssl

from hoopgw.runtime.tls import server_tls_options


def test_server_tls_options_from_pem_files() -> None:
    pem = os.path.join(os.path.dirname(twisted.test.__file__), "server.pem")
    options = server_tls_options(pem, pem)
    assert isinstance(options, ssl.CertificateOptions)
    assert options.getContext() is not None


def test_server_tls_options_missing_file(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        server_tls_options(str(tmp_path / "missing.pem"), str(tmp_path / "missing.key"))
