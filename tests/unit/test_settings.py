"""The settings table: typed values, bounds named in errors, and configured values
that the environment never overrides."""

from __future__ import annotations

import os
import re

import pytest

from measure_common import settings
from measure_common.settings import (
    DEFAULTS,
    SettingError,
    child_env,
    get_setting,
    given_setting,
)
from ryu_app.net.topology import Topology
from ryu_app.service.core import MeasureService

pytestmark = pytest.mark.unit


def test_defaults_when_unset():
    env: dict[str, str] = {}
    assert get_setting("MEASURE_FANOUT", env) == 4
    assert get_setting("MEASURE_AUTH", env) is True
    assert get_setting("MEASURE_READS_OPEN", env) is False
    assert get_setting("MEASURE_PROTECT", env) == ()
    assert get_setting("MEASURE_STATE_DIR", env) == "/var/lib/endhost-measure"
    assert get_setting("MEASURE_TOKEN_FILE", env) == "/var/lib/endhost-measure/controller.token"
    assert get_setting("MEASURE_SECRET_FILE", env, state_dir="/s") == "/s/agent.secret"
    assert given_setting("MEASURE_TOKEN_FILE", env) is None
    assert DEFAULTS["MEASURE_MAX_ACTIONS"] == 100


def test_values_are_typed():
    env = {"MEASURE_FANOUT": "7", "MEASURE_AUTH": "off", "MEASURE_READS_OPEN": "yes",
           "MEASURE_PROTECT": " h1, 10.0.0.0/8 ,,", "MEASURE_MGMT_NET": "10.9.0.1/16",
           "MEASURE_STATE_DIR": "/st", "MEASURE_TOKEN_FILE": ""}
    assert get_setting("MEASURE_FANOUT", env) == 7
    assert get_setting("MEASURE_AUTH", env) is False
    assert get_setting("MEASURE_READS_OPEN", env) is True
    assert get_setting("MEASURE_PROTECT", env) == ("h1", "10.0.0.0/8")
    assert get_setting("MEASURE_MGMT_NET", env) == "10.9.0.0/16"
    # an empty variable counts as unset; the state file follows MEASURE_STATE_DIR
    assert get_setting("MEASURE_TOKEN_FILE", env) == "/st/controller.token"


@pytest.mark.parametrize("name, value, message", [
    ("MEASURE_FANOUT", "0", "MEASURE_FANOUT='0' is not an integer from 1 to 64"),
    ("MEASURE_FANOUT", "four", "MEASURE_FANOUT='four' is not an integer from 1 to 64"),
    ("MEASURE_MAX_ACTIONS", "-3", "MEASURE_MAX_ACTIONS='-3' is not an integer from 1 to 100000"),
    ("MEASURE_AUTH", "maybe", "MEASURE_AUTH='maybe' is not one of 1, true, yes, on, 0,"),
    ("MEASURE_MGMT_NET", "10.0.0.0/99", "MEASURE_MGMT_NET='10.0.0.0/99' is not an address"),
])
def test_bad_values_name_the_variable(name, value, message):
    with pytest.raises(SettingError, match=re.escape(message)):
        get_setting(name, {name: value})


def test_unknown_names_are_refused():
    with pytest.raises(KeyError, match="MEASURE_NOPE is not a row"):
        get_setting("MEASURE_NOPE", {})
    with pytest.raises(KeyError, match="MEASURE_NOPE is not a row"):
        child_env({"MEASURE_NOPE": "1"}, base={})


def test_child_env_puts_values_over_the_base():
    assert child_env({"MEASURE_FANOUT": "2", "PATH": "/x"}, base={"PATH": "/y", "A": "b"}) == {
        "PATH": "/x", "A": "b", "MEASURE_FANOUT": "2"}
    assert settings.search_path("/venv/bin", {"PATH": "/usr/bin"}) == "/venv/bin:/usr/bin"


def test_every_controller_option_is_a_row_with_a_flag():
    from ryu_app.controller_options import build_parser

    flags = {s for a in build_parser()._actions for s in a.option_strings}
    for option, row in settings.OPTIONS.items():
        assert f"--{option.replace('_', '-')}" in flags, row.name


def test_no_module_outside_settings_reads_the_environment():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    readers = []
    for top in ("ryu_app", "host_agent", "measure_model", "measure_common", "measure_cli",
                "testing", "topo", "bench", "examples"):
        for folder, _, files in os.walk(os.path.join(root, top)):
            for name in files:
                path = os.path.join(folder, name)
                if name.endswith(".py") and not path.endswith("measure_common/settings.py"):
                    with open(path) as f:
                        if re.search(r"os\.environ|os\.getenv|getenv\(", f.read()):
                            readers.append(os.path.relpath(path, root))
    assert readers == []


def test_a_given_fanout_and_url_win_over_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MEASURE_AUTH", "off")
    monkeypatch.setenv("MEASURE_FANOUT", "9")
    monkeypatch.setenv("MEASURE_CONTROLLER_URL", "http://10.1.1.1:1")
    given = MeasureService(Topology(), str(tmp_path / "a"), fanout=2,
                           controller_url="http://10.2.2.2:2/")
    assert (given.fanout, given.controller_url) == (2, "http://10.2.2.2:2")
    unset = MeasureService(Topology(), str(tmp_path / "b"))
    assert (unset.fanout, unset.controller_url) == (9, "http://10.1.1.1:1")


def test_deploy_guide_lists_the_table_as_generated():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "docs", "deploy.md")) as f:
        assert settings.table_markdown() in f.read()


def test_every_agent_option_is_a_row_and_bounds_are_checked(tmp_path):
    from host_agent.__main__ import build_parser as agent_parser
    from host_agent.__main__ import parse_args
    from measure_common.config import ConfigError

    flags = {s for a in agent_parser()._actions for s in a.option_strings}
    keys = settings.options("agent")
    assert {f"--{k.replace('_', '-')}" for k in keys} <= flags
    assert len(flags - {"-h", "--help", "--version", "--config", "--check-config"}) == len(keys)
    args = parse_args(["--name", "h1"])
    assert (args.port, args.queues, args.nflog_threshold) == (8000, 1, 64)
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("name: h1\nqueues: 17\n")
    with pytest.raises(ConfigError, match=r"^queues 17 is out of range 1\.\.16$"):
        parse_args(["--config", str(cfg)])
