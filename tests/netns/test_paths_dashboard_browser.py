"""The path health view (#/paths) in a real headless Chromium, against the real
controller service, REST API and dashboard (agents faked as in the unit tier:
results posted as a root agent posts them). Root tier like the other browser test."""

from __future__ import annotations

import os

import pytest

from testing.browser import chrome, screenshot, texts, wait_for
from testing.harness import serving
from testing.netns import ROOT
from testing.pathharness import PathHarness, crossing, post_task

pytestmark = pytest.mark.netns


def test_suspects_matrix_and_loss_coloured_links(tmp_path):
    from ryu.app.wsgi import WSGIApplication
    from selenium.webdriver.common.by import By

    from ryu_app.rest.api import register_rest
    from ryu_app.rest.dashboard import register_dashboard

    h = PathHarness(str(tmp_path / "state"))
    h.wsgi = WSGIApplication()  # the dashboard's routes first, as the Ryu app does
    register_rest(h.wsgi, h.service, register_dashboard(h.wsgi, h.service))
    task_id = post_task(h, mode="dry_run")
    for _ in range(2):
        h.report(task_id, crossing(h, 1, 2))
    with serving(h.wsgi) as url:
        with chrome() as driver:
            driver.get(f"{url}/dashboard/#/paths")
            wait_for(driver, lambda: driver.find_elements(By.CSS_SELECTOR, "#suspects-table"),
                     20, "the suspects table")
            assert texts(driver, "#suspects-table tbody td:first-child") == ["s1:12-s2:11"]
            # the view redraws every 2 s: read everything in one script run
            seen = driver.execute_script("""
                const cells = [...document.querySelectorAll('#matrix-loss td.cell[data-pair]')];
                const line = (n) => document.querySelector(`line[data-link="${n}"]`);
                const bad = line('s1:12-s2:11');
                return {loss: Object.fromEntries(cells.map((c) => [c.dataset.pair,
                                                               Number(c.dataset.loss)])),
                        badClass: bad.getAttribute('class'),
                        bad: getComputedStyle(bad).stroke,
                        clean: getComputedStyle(line('s3:14-s4:13')).stroke,
                        access: Boolean(line('h5-s5:1'))};""")
            assert len(seen["loss"]) == 20
            assert seen["loss"]["h1>h2"] == pytest.approx(0.1) and seen["loss"]["h3>h4"] == 0
            assert "suspect" in seen["badClass"] and seen["access"]
            assert seen["bad"] == "rgb(195, 34, 34)"  # red: 5% loss
            assert seen["clean"] == "rgb(34, 195, 34)"  # green: clean
            screenshot(driver, "dashboard-paths.png",
                       also=os.path.join(ROOT, "docs", "dashboard-paths.png"))
