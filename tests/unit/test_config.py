"""Config files: the command's parser is the schema; errors name file, line and field."""

from __future__ import annotations

import argparse
import os

import pytest

from measure_common.config import (
    ConfigError,
    add_config_arguments,
    check_secret_file,
    load_config,
    parse_with_config,
)
from measure_model.version import compatible, incompatibility

pytestmark = pytest.mark.unit


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="x")
    p.add_argument("--name", required=True)
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-memory-mb", type=float, default=256)
    p.add_argument("--allow-legacy", action="store_true")
    p.add_argument("--mode", choices=["a", "b"], default="a")
    add_config_arguments(p)
    return p


def _write(tmp_path, text: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_file_values_become_defaults_and_flags_override(tmp_path):
    path = _write(tmp_path, "name: h2\nport: 9000\nallow_legacy: true\nmax_memory_mb: 64\n")
    args = parse_with_config(_parser(), ["--config", path])
    assert (args.name, args.port, args.allow_legacy, args.max_memory_mb) == ("h2", 9000, True, 64.0)
    args = parse_with_config(_parser(), ["--config", path, "--port", "8001", "--name", "h3"])
    assert (args.name, args.port) == ("h3", 8001)


@pytest.mark.parametrize("text, message", [
    ("name: h2\nqueus: 2\n", "line 2: field 'queus': unknown field"),
    ("name: h2\nprot: 1\n", "line 2: field 'prot': unknown field (did you mean 'port'?)"),
    ("port: '8000'\n", "line 1: field 'port': must be an integer, not str"),
    ("port: true\n", "line 1: field 'port': must be an integer, not bool"),
    ("port: 1.5\n", "line 1: field 'port': must be an integer, not float"),
    ("allow_legacy: 1\n", "line 1: field 'allow_legacy': must be true or false, not int"),
    ("allow_legacy: yes\n", "line 1: field 'allow_legacy': must be true or false, not str"),
    ("mode: c\n", "line 1: field 'mode': 'c' is not one of a, b"),
    ("name: [1]\n", "line 1: field 'name': must be a string, not list"),
    ("- 1\n", "must be a mapping of option: value"),
    ("name: a\nname: b\n", "invalid YAML: duplicate key 'name' (line 2)"),
    ("name: [\n", "invalid YAML"),
    ("config: other.yaml\n", "field 'config': unknown field"),
])
def test_bad_files_are_refused_with_file_line_and_field(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path, _parser())
    assert str(err.value).startswith(f"config {path}")
    assert message in str(err.value)


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read: No such file"):
        load_config(str(tmp_path / "nope.yaml"), _parser())
    assert load_config(_write(tmp_path, ""), _parser()) == {}


def test_secret_file_checks(tmp_path):
    secret = tmp_path / "s"
    with pytest.raises(ConfigError, match="No such file"):
        check_secret_file(str(secret))
    secret.write_text("x" * 32)
    os.chmod(secret, 0o644)
    with pytest.raises(ConfigError, match="mode 0644 is readable by others; run: chmod 600"):
        check_secret_file(str(secret))
    os.chmod(secret, 0o600)
    check_secret_file(str(secret))
    secret.write_text("not a credential\n")
    with pytest.raises(ConfigError, match="does not hold a valid credential"):
        check_secret_file(str(secret))
    with pytest.raises(ConfigError, match="not a regular file"):
        check_secret_file(str(tmp_path))


def test_versions():
    assert compatible("0.2.0", "0.2.5") and compatible("0.2.0", "0.1.9")
    assert not compatible("0.3.0", "0.1.0") and not compatible("1.2.0", "0.2.0")
    assert incompatibility("0.2.0", "0.2.1", "agent h2") is None
    msg = incompatibility("0.4.0", "0.2.1", "agent h2")
    assert msg is not None and "0.2.1" in msg and "0.4.0" in msg and "agent h2" in msg
    assert "is not MAJOR.MINOR" in (incompatibility("0.2.0", "garbage", "agent h2") or "")
