"""A real browser launches a tiny training job from the Training page and watches it complete."""

from __future__ import annotations

import pytest

from core import runs
from tests.conftest import browse_to, wait_for_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def set_number(page, label: str, value: int) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    wait_for_app(page)


def test_launch_tiny_job_from_the_page_and_see_it_complete(demo_root, app_server_factory, new_page, tmp_path):
    server = app_server_factory(demo_root.parent)
    page, watch = new_page()
    browse_to(page, server.url, "Training")  # through the sidebar; waits for the title
    page.get_by_role("heading", name="New run").wait_for()

    page.get_by_label("Run name (optional)").fill("browser-run")
    page.get_by_label("Run name (optional)").press("Enter")
    wait_for_app(page)
    set_number(page, "Image height", 32)
    set_number(page, "Image width", 24)
    set_number(page, "Epochs", 1)
    page.get_by_role("button", name="Launch training").click()
    page.get_by_text("Launched browser-run").wait_for()
    # The live panel refreshes by itself until the job ends; the URL remembers the run.
    page.wait_for_function(
        "() => document.body.innerText.includes('browser-run — completed')", timeout=180_000, polling=500
    )
    wait_for_app(page)
    assert "run=browser-run" in page.url
    page.get_by_text("Loss").first.wait_for()
    watch.screenshot("train-completed")
    # main.py's material page icon is fetched from fonts.gstatic.com, which an offline machine cannot resolve
    watch.errors[:] = [e for e in watch.errors if "ERR_NAME_NOT_RESOLVED" not in e]
    watch.assert_clean()
    run = runs.RunFolder(tmp_path / "models" / "browser-run")
    assert runs.read_status(run)["state"] == "completed"
    assert run.best_checkpoint.is_file()

    # A reload (of /train?run=browser-run) keeps the selected run.
    page.reload()
    wait_for_app(page)
    page.wait_for_function("() => document.body.innerText.includes('browser-run — completed')", timeout=60_000)
    # Streamlit probes a sub-path URL's parents for its assets (404s) and the offline font fetch fails.
    watch.errors[:] = [e for e in watch.errors if "ERR_NAME_NOT_RESOLVED" not in e and "404" not in e]
    watch.assert_clean()
