"""The dashboard in a real headless Chromium against a real controller process.

No Mininet here (that is ``test_dashboard_mininet.py``): results are posted
as a root agent posts them (``POST /measure/v1/reports`` with snapshots of a
real counter), so the task page, the token prompt and the escaping of
hostile text are checked in seconds. Root tier like the netns tests: a
controller process and a browser.
"""

from __future__ import annotations

import os
import time

import pytest

from testing.browser import login, screenshot, texts, visible, wait_for
from testing.controllers import rest_call
from testing.harness import hh_report

pytestmark = pytest.mark.netns

EVIL_KEY = "<script>window.pwned=1</script>"
EVIL_NAME = '<img src=x onerror="window.pwned=2">'


def test_the_token_is_asked_once_and_a_wrong_one_is_refused(ctl):
    controller, token, driver = ctl
    driver.get(f"{controller.url}/dashboard/")
    driver.execute_script("sessionStorage.clear()")
    driver.refresh()
    field = wait_for(driver, lambda: visible(driver, "#token"), 15, "the token prompt")
    assert texts(driver, "#main") == [""]
    field.send_keys("not-the-token")
    driver.find_element("id", "login-button").click()
    _, refusal = rest_call(controller.url, "not-the-token", "GET", "/measure/v1/tasks")
    wait_for(driver, lambda: texts(driver, "#login-error") == [f"refused: {refusal['error']}"],
             10, "the API's refusal shown")
    assert driver.execute_script("return sessionStorage.getItem('measure.token')") is None
    screenshot(driver, "dashboard-login-refused.png")
    login(driver, controller.url, token)
    wait_for(driver, lambda: visible(driver, "#network-summary"), 10, "the network page")
    assert driver.execute_script("return sessionStorage.getItem('measure.token')") == token
    driver.refresh()  # same tab: not asked again
    wait_for(driver, lambda: texts(driver, "#overlay-root") == ["none"], 10, "network page again")
    assert visible(driver, "#token") is None
    status = driver.execute_script(
        "const r = await fetch('/metrics'); return r.status;")  # the page's fetch, no header
    assert status == 401


def test_hostile_agent_url_and_policy_text_are_shown_as_text(ctl):
    controller, token, driver = ctl
    status, _ = rest_call(controller.url, token, "POST", "/measure/v1/agents",
                     {"name": "evil", "url": "http://<script>:1", "data_ip": "10.9.9.9"})
    assert status == 201
    login(driver, controller.url, token)
    driver.get(f"{controller.url}/dashboard/#/network")
    wait_for(driver, lambda: "http://<script>:1" in texts(driver, "#agents-table td"), 10,
             "the agent's URL in the table")
    yaml = f'tasks:\n  - name: bad\n    kind: heavy_hitters\n    key: "{EVIL_KEY}"\n'
    api_status, api_error = rest_call(controller.url, token, "POST", "/measure/v1/tasks",
                                 yaml.encode(), "application/yaml")
    assert api_status == 400 and EVIL_KEY in api_error["error"]
    driver.get(f"{controller.url}/dashboard/#/tasks")
    editor = wait_for(driver, lambda: visible(driver, "#yaml"), 10, "the policy editor")
    for text, expected in ((yaml, api_error["error"]),
                           (f"tasks:\n  - name: '{EVIL_NAME}'\n    kind: counter\n", None)):
        editor.clear()
        editor.send_keys(text)
        driver.find_element("id", "create").click()
        if expected is None:
            expected = rest_call(controller.url, token, "POST", "/measure/v1/tasks", text.encode(),
                            "application/yaml")[1]["error"]
            assert EVIL_NAME in expected
        wait_for(driver, lambda e=expected: texts(driver, "#create-error") == [e], 10,
                 "the API's error text, verbatim")
    screenshot(driver, "dashboard-hostile-text.png")
    assert driver.execute_script("return window.pwned") is None
    assert driver.execute_script(
        "return document.querySelectorAll('main script, main img').length") == 0


def test_task_page_charts_focus_and_past_intervals(ctl):
    controller, token, driver = ctl
    status, body = rest_call(controller.url, token, "POST", "/measure/v1/tasks", {"tasks": [
        {"name": "hh-view", "kind": "heavy_hitters", "key": "src_dst", "increment": "bytes"}]})
    assert status == 201
    task_id = body["tasks"][0]["id"]
    now = time.time()
    ends = [now - 5 + i for i in range(5)]
    for i, end in enumerate(ends):
        hh = {"10.0.0.1,10.0.0.5": 700 + 100 * i, "10.0.0.2,10.0.0.9": 900 - 100 * i}
        assert rest_call(controller.url, token, "POST", "/measure/v1/reports",
                    hh_report(task_id, ["h1", "h5"], [], end, hh))[0] == 202
    login(driver, controller.url, token)
    driver.get(f"{controller.url}/dashboard/#/task/{task_id}")
    points = "#totals-chart circle.point"
    wait_for(driver, lambda: len(driver.find_elements("css selector", points)) == 5, 15,
             "five points on the totals chart")
    totals = [float(p.get_attribute("data-y"))
              for p in driver.find_elements("css selector", points)]
    assert totals == [1600.0] * 5  # each interval's snapshot holds 1600 bytes
    legend = driver.find_elements("css selector", "#keys-chart .legend-item")
    assert [i.text for i in legend] == ["10.0.0.1,10.0.0.5", "10.0.0.2,10.0.0.9"]
    legend[1].click()
    wait_for(driver, lambda: "focus=10.0.0.2%2C10.0.0.9" in driver.current_url, 5, "focus in URL")
    dimmed = driver.find_elements("css selector", "#keys-chart g.series.dimmed")
    assert [g.get_attribute("data-name") for g in dimmed] == ["10.0.0.1,10.0.0.5"]
    from selenium.webdriver.support.ui import Select

    picker = Select(driver.find_element("id", "history"))
    assert len(picker.options) == 6  # live + five intervals
    picker.select_by_value(str(ends[0]))
    wait_for(driver, lambda: texts(driver, "#shown-interval")[0].startswith("(past: "), 5,
             "a past interval shown")
    # the counter's threshold is half the bytes: one heavy hitter per interval
    rows = texts(driver, "section[data-field=heavy_hitters] table.pairs tbody tr")
    assert rows == ["10.0.0.2,10.0.0.9 900"]
    assert f"at={ends[0]}" in driver.current_url
    screenshot(driver, "dashboard-task-past.png")
    driver.find_elements("css selector", points)[-1].click()
    wait_for(driver, lambda: f"at={ends[-1]}" in driver.current_url, 5, "clicked point in URL")
    wait_for(driver, lambda: texts(driver, "section[data-field=heavy_hitters] table.pairs "
                                           "tbody tr") == ["10.0.0.1,10.0.0.5 1,100"], 5,
             "the clicked interval's heavy hitters")
    assert os.path.exists(screenshot(driver, "dashboard-task-clicked.png"))


def test_task_page_answers_a_coarser_key(ctl):
    """An elastic five_tuple task's page offers 'by key': src shows per-source sizes."""
    from selenium.webdriver.support.ui import Select

    from testing.flows import elastic_counter

    controller, token, driver = ctl
    status, body = rest_call(controller.url, token, "POST", "/measure/v1/tasks", {"tasks": [
        {"name": "ft-view", "kind": "flow_size", "key": "five_tuple", "memory": 65536}]})
    assert status == 201
    task_id = body["tasks"][0]["id"]
    end = time.time()
    report = {"task_id": task_id, "interval_end": end, "kind": "flow_size",
              "snapshot": elastic_counter("five_tuple").snapshot(end, host="h1"), "covered": ["h1"],
              "missing": [], "generated_at": end, "oldest": end}
    assert rest_call(controller.url, token, "POST", "/measure/v1/reports", report)[0] == 202
    login(driver, controller.url, token)
    driver.get(f"{controller.url}/dashboard/#/task/{task_id}")
    wait_for(driver, lambda: visible(driver, "#key-select"), 15, "the key selector")
    Select(driver.find_element("id", "key-select")).select_by_value("src")
    script = ("return [...document.querySelectorAll('#partial-table tbody tr')]"
              ".map(r => [...r.cells].map(c => c.textContent).join(' '))")  # one read: the
    # table is redrawn every second, so elements found earlier may be gone
    wait_for(driver, lambda: len(driver.execute_script(script)) == 5, 15, "five sources")
    assert driver.execute_script(script)[0] == "10.0.0.1 95 95 95 yes"
    assert "key=src" in driver.current_url
    screenshot(driver, "dashboard-task-by-key.png")
