"""The Review page's embedding map in a real browser: a box selection filters the gallery."""

from __future__ import annotations

import re

import pytest

from tests.conftest import wait_for_app
from tests.test_page_review import add_embeddings, make_dataset_and_run

pytestmark = pytest.mark.browser


def test_box_selection_on_the_map_filters_the_gallery(tmp_path, app_server_factory, new_page):
    frame, run = make_dataset_and_run(tmp_path)
    add_embeddings(run, frame)
    server = app_server_factory(tmp_path / "data", WORKBENCH_MODELS_DIR=str(tmp_path / "models"))
    page, watch = new_page()
    page.set_default_timeout(120_000)
    page.goto(server.url + "/review?run=run-a")
    wait_for_app(page)
    page.get_by_text(re.compile(r"^28 images, 2 pages$")).wait_for()

    chart = page.locator(".st-key-review_map").locator('[data-testid="stPlotlyChart"]')
    plot_area = chart.locator(".nsewdrag").first
    plot_area.scroll_into_view_if_needed()
    plot_area.wait_for()
    box = plot_area.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)  # the modebar shows on hover
    chart.locator('.modebar-btn[data-val="select"]').first.click(force=True)
    # The left half of the x range: it holds the leftmost points and not the rightmost ones.
    page.mouse.move(box["x"] + 3, box["y"] + 3)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.5, steps=8)
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] - 3, steps=8)
    page.mouse.up()

    chip = page.get_by_role("button", name=re.compile(r"photos selected on the map"))
    chip.wait_for()
    selected = int(re.search(r"(\d+) photos selected", chip.inner_text()).group(1))
    assert 0 < selected < len(frame)
    wait_for_app(page)
    page.get_by_text(re.compile(rf"^{selected} images, \d+ pages$")).wait_for()  # only the selected photos
    chip.click()
    page.get_by_text(re.compile(r"^28 images, 2 pages$")).wait_for()
    watch.errors[:] = [e for e in watch.errors if "ERR_NAME_NOT_RESOLVED" not in e and "404" not in e]
    watch.assert_clean()
