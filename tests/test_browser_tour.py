"""The full browser tour (issue 7): fresh demo data → Dataset → Augmentations → Training → Review →
Submission, in headless Chromium. Screenshots of each page land in test-artifacts/; the test fails on
any Streamlit exception box or browser console error."""

from __future__ import annotations

import re

import pytest

from core.data import demo
from core.evaluation.submission import validate_submission
from tests.conftest import browse_to, wait_for_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

RUN_DONE = re.compile(r"— completed")


def _image_sources(page) -> list[str]:
    return page.locator('[data-testid="stImage"] img').evaluate_all("els => els.map(e => e.src)")


def _wait_images_change(page, before: list[str]) -> None:
    page.wait_for_function(
        "before => [...document.querySelectorAll('[data-testid=\"stImage\"] img')].map(e => e.src).join() !== before",
        arg=",".join(before),
    )


def _fill_number(page, label: str, value: int) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    wait_for_app(page)


def test_full_tour(tmp_path, app_server_factory, new_page):
    data = tmp_path / "data"
    demo.generate(data / "demo", people=24, eval_people=3, seed=3)
    server = app_server_factory(data)
    page, watch = new_page()

    # Dataset: the class chart and the gallery thumbnails.
    browse_to(page, server.url, "Dataset")
    page.locator('[data-testid="stPlotlyChart"]').first.wait_for()
    page.locator('[data-testid="stImage"] img').first.wait_for()
    watch.screenshot("tour-1-dataset")
    watch.assert_clean()

    # Augmentations: remove the first step of pipeline A and see the samples change.
    browse_to(page, server.url, "Augmentations")
    page.locator('[data-testid="stImage"] img').first.wait_for()
    before = _image_sources(page)
    page.get_by_role("button", name="✕").first.click()
    wait_for_app(page)
    _wait_images_change(page, before)
    watch.screenshot("tour-2-augment")
    watch.assert_clean()

    # Training: a tiny job from the form, watched until it completes.
    browse_to(page, server.url, "Training")
    _fill_number(page, "Image height", 64)
    _fill_number(page, "Image width", 48)
    _fill_number(page, "Epochs", 2)
    page.get_by_role("button", name="Launch training").click()
    page.get_by_text(RUN_DONE).first.wait_for(timeout=300_000)
    watch.screenshot("tour-3-train")
    watch.assert_clean()

    # Review: click a confusion-matrix cell, then page the gallery.
    browse_to(page, server.url, "Review")
    chart = page.locator('[data-testid="stPlotlyChart"]').first
    chart.wait_for()
    plot_area = chart.locator(".nsewdrag").first
    box = plot_area.bounding_box()
    assert box is not None
    cells = 18
    page.mouse.click(box["x"] + box["width"] * 0.5 / cells, box["y"] + box["height"] * 0.5 / cells)
    page.get_by_role("button", name=re.compile("^✕ true")).wait_for()
    page.get_by_role("button", name=re.compile("^✕ true")).click()
    wait_for_app(page)
    next_page = page.locator('[data-testid="stPaginationNext"]')
    if next_page.count():  # more than one page of misclassified images
        first_page = _image_sources(page)
        next_page.first.click()
        wait_for_app(page)
        _wait_images_change(page, first_page)
    watch.screenshot("tour-4-review")
    watch.assert_clean()

    # Submission: predict the eval set, download submission.csv and validate it.
    browse_to(page, server.url, "Submission")
    page.get_by_role("button", name="Predict", exact=True).click()
    page.get_by_text("started").first.wait_for()
    download_button = page.get_by_role("button", name="Download submission.csv")
    download_button.wait_for(timeout=300_000)
    with page.expect_download() as info:
        download_button.click()
    target = tmp_path / "submission.csv"
    info.value.save_as(target)
    assert validate_submission(target, data / "demo" / "eval" / "info.csv") == []
    watch.screenshot("tour-5-submit")
    watch.assert_clean()
