"""Shared fixtures: tiny demo datasets, a running Streamlit server and a headless Chromium.

Everything is made inside the tests: no network, no committed binaries.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("WORKBENCH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = REPO_ROOT / "test-artifacts"

# Tests never reach the internet: pretrained weights come from a loopback server a test starts (its
# tests unset this) or are refused at once. Set before anything imports timm / huggingface_hub.
os.environ.setdefault("WORKBENCH_OFFLINE", "1")


def wait_until(predicate, timeout: float = 180.0, what: str = "condition", interval: float = 0.05):
    """Poll ``predicate`` until it returns something truthy (returned) or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def wait_state(run, *states: str, timeout: float = 180.0) -> dict:
    """Poll a run folder (reconciled, as the app lists it) until its state is one of ``states``."""
    from core import runs
    from core.runs import jobs

    return wait_until(
        lambda: (s := jobs.reconcile(run)).get("state") in states and s,
        timeout,
        f"{run.id} to reach {states} (now {runs.read_status(run)}; log: {runs.tail(run.log, 3000)})",
    )


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """A small demo dataset in the competition layout (14 train people, 4 eval people), made once."""
    from core.data import demo

    out = tmp_path_factory.mktemp("demo") / "demo"
    demo.generate(out, people=14, eval_people=4, seed=0)
    return out


@pytest.fixture
def demo_copy(demo_root, tmp_path) -> Path:
    """A private, writable copy of the small demo dataset (for tests that damage it)."""
    dst = tmp_path / "demo"
    shutil.copytree(demo_root, dst, symlinks=True)
    return dst


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AppServer:
    """`streamlit run app/main.py` on a free loopback port, with the workbench settings in its env."""

    def __init__(self, workdir: Path, env: dict[str, str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"streamlit-{self.port}.log"
        full_env = {**os.environ, **env, "PYTHONPATH": str(REPO_ROOT)}
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                str(REPO_ROOT / "app" / "main.py"),
                "--server.port",
                str(self.port),
                "--server.address",
                "127.0.0.1",
                "--server.headless",
                "true",
                "--server.fileWatcherType",
                "none",
                "--browser.gatherUsageStats",
                "false",
            ],
            cwd=REPO_ROOT,
            env=full_env,  # the repository's .streamlit/config.toml applies stdout=self._log, stderr=subprocess.STDOUT,
        )
        self._wait_healthy()

    def _wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited early:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(self.url + "/_stcore/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"streamlit did not become healthy:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


@pytest.fixture
def app_server_factory(tmp_path) -> Iterator:
    """Start servers with ``factory(data_root, **env)``; all are stopped at the end of the test."""
    servers: list[AppServer] = []

    def start(data_root: Path, **env: str) -> AppServer:
        base = {
            "WORKBENCH_DATA_ROOTS": str(data_root),
            "WORKBENCH_MODELS_DIR": str(tmp_path / "models"),
            "WORKBENCH_SUBMISSIONS_DIR": str(tmp_path / "submissions"),
            "WORKBENCH_CACHE_DIR": str(tmp_path / "cache"),
            "WORKBENCH_SPECS_DIR": str(tmp_path / "specs"),
        }
        server = AppServer(tmp_path, {**base, **env})
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def browser():
    """A headless Debian Chromium driven by Playwright. Skipped off CI when chromium is absent."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} missing: .ci/run must install Debian's chromium")
        pytest.skip(f"{CHROMIUM} not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


class PageWatch:
    """Collects browser console errors and page exceptions for a Playwright page."""

    def __init__(self, page):
        self.page = page
        self.errors: list[str] = []
        page.on("console", lambda msg: msg.type == "error" and self.errors.append(msg.text))
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def assert_clean(self) -> None:
        exceptions = self.page.locator('[data-testid="stException"]')
        assert exceptions.count() == 0, exceptions.first.inner_text()
        assert not self.errors, self.errors

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so fixtures can tell whether the test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def new_page(browser, request):
    """``new_page()`` -> (page, watch) in a fresh browser context; closed at the end of the test.

    When the test fails, each page is saved as test-artifacts/FAILED-<test>-<n>.png first.
    """
    contexts = []

    def make():
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(60_000)
        return page, PageWatch(page)

    yield make
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for number, context in enumerate(contexts):
        if failed and context.pages:
            try:
                PageWatch(context.pages[0]).screenshot(f"FAILED-{request.node.name}-{number}")
            except Exception as err:  # a screenshot must never hide the real failure
                print(f"could not save a failure screenshot: {err}")
        context.close()


def browse_to(page, base_url: str, title: str) -> None:
    """Open an app page through the sidebar navigation and wait for its title.

    Sub-path URLs make Streamlit probe a 404 health path (console errors), so tests start at the root.
    A click that lands while a script run is finishing can be dropped: retry until the title shows.
    """
    if not page.url.startswith(base_url):
        page.goto(base_url)
        wait_for_app(page)
    heading = page.get_by_role("heading", name=title, exact=True)
    for _ in range(5 if not heading.count() else 0):
        page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title).click()
        try:
            heading.wait_for(timeout=45_000)  # a slow render on a loaded machine is not a dropped click
            break
        except Exception:  # noqa: BLE001 - retried; the last wait below raises for real
            continue
    heading.wait_for()
    wait_for_app(page)


def wait_for_app(page) -> None:
    """Wait until Streamlit has finished its current script run."""
    page.wait_for_selector('[data-testid="stApp"]')
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]') || "
        "!document.querySelector('[data-testid=\"stStatusWidget\"]').innerText.includes('Running')",
        timeout=60_000,
    )


@pytest.fixture
def jobs_env(tmp_path, monkeypatch):
    """Private models and cache folders and one job slot; launched jobs inherit them through os.environ."""
    monkeypatch.setenv("WORKBENCH_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("WORKBENCH_MAX_JOBS", "1")
    (tmp_path / "models").mkdir()
    return tmp_path
