"""A real browser for the console's tests: Debian's ``chromium``, headless, driven through
Debian's ``chromium-driver`` with Selenium, and the test OIDC provider (npm ``oidc-provider``).

Nothing is downloaded: Selenium is pointed at the system's browser and driver and told to stay
offline (its "manager" would otherwise fetch a driver). Set ``HOOPGW_CONSOLE_SCREENSHOTS`` to a
folder to have :meth:`Browser.screenshot` write the documentation's pictures there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PROVIDER_DIR = Path(__file__).with_name("oidc-provider")


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for program in (CHROMIUM, CHROMEDRIVER):
        if not os.access(program, os.X_OK):
            return f"{program} is missing (./dev setup installs chromium and chromium-driver)"
    if shutil.which("node") is None:
        return "node is missing (./dev setup installs nodejs)"
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        return f"npm oidc-provider is missing in {PROVIDER_DIR} (./dev setup runs npm ci)"
    return None


class Browser:
    """One headless chromium with its own profile and download folder."""

    def __init__(self, folder: Path) -> None:
        os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager download anything
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.downloads = folder / "downloads"
        self.downloads.mkdir(parents=True, exist_ok=True)
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for argument in (
            "--headless=new",
            "--no-sandbox",  # tests run as root in CI containers
            "--disable-dev-shm-usage",
            # The gateway and the provider use the tests' own CA, which this profile does not
            # trust; only loopback test servers are visited.
            "--ignore-certificate-errors",
            "--window-size=1280,900",
            f"--user-data-dir={folder / 'profile'}",
        ):
            options.add_argument(argument)
        options.add_experimental_option(
            "prefs",
            {
                "download.default_directory": str(self.downloads),
                "download.prompt_for_download": False,
            },
        )
        self.driver: Any = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.driver.execute_cdp_cmd(
            "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(self.downloads)}
        )

    def close(self) -> None:
        self.driver.quit()

    def get(self, url: str) -> None:
        self.driver.get(url)

    @property
    def url(self) -> str:
        return str(self.driver.current_url)

    @property
    def text(self) -> str:
        return str(self.driver.find_element("tag name", "body").text)

    def find(self, css: str) -> Any:
        return self.driver.find_element("css selector", css)

    def find_all(self, css: str) -> list[Any]:
        return list(self.driver.find_elements("css selector", css))

    def wait_for(self, check: Any, *, timeout: float = 20.0, what: str = "the page") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = check()
            except Exception:  # the page is changing under us
                value = None
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; at {self.url}:\n{self.text[:2000]}")

    def wait_for_text(self, text: str, *, timeout: float = 20.0) -> None:
        self.wait_for(lambda: text in self.text, timeout=timeout, what=repr(text))

    def screenshot(self, name: str) -> None:
        folder = os.environ.get("HOOPGW_CONSOLE_SCREENSHOTS")
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            self.driver.save_screenshot(str(Path(folder) / f"{name}.png"))

    def downloaded(self, suffix: str, *, timeout: float = 60.0) -> Path:
        def done() -> Path | None:
            found = [p for p in self.downloads.iterdir() if p.name.endswith(suffix)]
            return found[0] if found else None

        return Path(self.wait_for(done, timeout=timeout, what=f"a downloaded {suffix} file"))

    def console_log(self) -> list[Any]:
        return list(self.driver.get_log("browser"))


class OidcProvider:
    """``node provider.js``: an OpenID provider on a loopback HTTPS port."""

    def __init__(
        self,
        folder: Path,
        *,
        cert: Path,
        key: Path,
        redirect_uri: str,
        client_id: str,
        client_secret: str,
        people: Mapping[str, Sequence[str]],
    ) -> None:
        config = folder / "provider.json"
        config.write_text(
            json.dumps(
                {
                    "cert": str(cert),
                    "key": str(key),
                    "redirect_uri": redirect_uri,
                    "client_id": client_id,
                    "client_secret": client_secret,
                    "people": {k: list(v) for k, v in people.items()},
                }
            )
        )
        self.log = folder / "provider.log"
        self._log_file = self.log.open("wb")
        self.process = subprocess.Popen(
            ["node", str(PROVIDER_DIR / "provider.js"), str(config)],
            cwd=PROVIDER_DIR,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            stdin=subprocess.DEVNULL,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode().strip()
        if not line.startswith("READY "):
            self.stop()
            raise AssertionError(f"the OIDC provider did not start: {self.log.read_text()}")
        self.issuer = line.removeprefix("READY ")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_file.close()


def sign_in_at_provider(browser: Browser, login: str) -> None:
    """Sign in on oidc-provider's development pages (any password) and consent."""
    browser.wait_for(lambda: browser.find_all("input[name=login]"), what="the provider's sign-in")
    browser.find("input[name=login]").send_keys(login)
    browser.find("input[name=password]").send_keys("any password")
    browser.find("button[type=submit]").click()
    # The consent page, shown the first time a person signs in to the client.
    browser.wait_for(
        lambda: "/console/" in browser.url or browser.find_all("button[type=submit]"),
        what="the consent page or the console",
    )
    if "/console/" not in browser.url:
        browser.find("button[type=submit]").click()


class Held:
    """The agent's statement, run on its own thread as a waiting agent would."""

    def __init__(self, conninfo: str, sql: str) -> None:
        self.rowcount: int | None = None
        self.error: BaseException | None = None
        self.conn = psycopg.connect(conninfo, autocommit=True)
        self.thread = threading.Thread(target=self._run, args=(sql,), daemon=True)
        self.thread.start()

    def _run(self, sql: str) -> None:
        try:
            self.rowcount = self.conn.execute(sql).rowcount
        except BaseException as exc:
            self.error = exc

    def join(self, timeout: float = 30.0) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the agent's statement did not finish"
        self.conn.close()
