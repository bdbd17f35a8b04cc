"""A real browser (Playwright + Debian Chromium) on `streamlit run`: the Dataset page renders cleanly."""

from __future__ import annotations

import pytest

from tests.imagefactory import jpeg_bytes, write

from .conftest import wait_for_app

pytestmark = pytest.mark.browser

EVIL = "<img src=x onerror=alert(1)>"


def assert_clean(watch) -> None:
    """watch.assert_clean(), except external fetches that cannot resolve on an offline machine
    (main.py's material page icon is fetched from fonts.gstatic.com)."""
    watch.errors[:] = [e for e in watch.errors if "ERR_NAME_NOT_RESOLVED" not in e]
    watch.assert_clean()


def test_dataset_page_shows_chart_and_thumbnails(demo_root, app_server_factory, new_page):
    server = app_server_factory(demo_root.parent)
    page, watch = new_page()
    page.goto(server.url)  # the Dataset page is the default; a sub-path URL makes Streamlit probe 404s
    wait_for_app(page)
    page.set_default_timeout(120_000)  # two shared cores: a cold scan plus 24 cold thumbnails can be slow
    page.wait_for_selector('[data-testid="stPlotlyChart"]')
    page.get_by_text("Class distribution").wait_for()
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=\"stImage\"] img')]"
        ".filter(img => img.complete && img.naturalWidth > 0).length >= 6",
        timeout=120_000,
    )
    # The class chart draws all 18 named bars.
    page.locator('[data-testid="stPlotlyChart"] .xtick').first.wait_for()
    ticks = page.locator('[data-testid="stPlotlyChart"]').first.locator(".xtick text").all_text_contents()
    assert len(ticks) == 18 and "Wear · Male · <30" in ticks
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0
    watch.screenshot("dataset_page")
    assert_clean(watch)


def test_hostile_class_name_is_text_in_the_browser(tmp_path, app_server_factory, new_page):
    data = tmp_path / "data"
    write(data / "evil" / EVIL / "a.jpg", jpeg_bytes())
    write(data / "evil" / "plain" / "b.jpg", jpeg_bytes())
    server = app_server_factory(data)
    page, watch = new_page()
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.set_default_timeout(120_000)
    page.goto(server.url)
    wait_for_app(page)
    page.wait_for_selector('[data-testid="stPlotlyChart"] .xtick')
    ticks = page.locator('[data-testid="stPlotlyChart"]').first.locator(".xtick text").all_text_contents()
    assert EVIL in ticks  # drawn literally as the bar's label
    assert page.locator('img[src="x"]').count() == 0
    assert dialogs == []
    assert_clean(watch)
