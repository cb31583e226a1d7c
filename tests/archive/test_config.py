"""archive.toml: the example file, types and overrides."""
from __future__ import annotations

import pathlib
import re

import pytest

from archive_server import config
from archive_server.cli import build_parser, load_config
from archive_server.errors import ConfigError

EXAMPLE = pathlib.Path(config.__file__).with_name("archive.example.toml")


def test_the_example_names_every_key_and_gives_the_defaults():
    loaded = config.load(EXAMPLE)
    defaults = config.ArchiveConfig()
    assert loaded == defaults
    text = EXAMPLE.read_text()
    for field in config.ArchiveConfig.__dataclass_fields__:
        if field not in ("tls", "audit_syslog"):  # tables: [tls], [audit]
            assert re.search(rf"^#? ?{field} = ", text, re.M), f"{field} is not in the example"
    for field in config.TlsConfig.__dataclass_fields__:
        assert re.search(rf"^# {field} = ", text, re.M)
    assert re.search(r"^\[audit\]\n(#.*\n)*#? ?syslog = ", text, re.M), "[audit] syslog is not in the example"


def test_bad_values_name_the_key(tmp_path):
    for body, key in (('listen = 5', "listen"), ('nonsense = 1', "nonsense"),
                      ('max_workers = true', "max_workers"), ('listen = "nowhere"', "listen"),
                      ('[tls]\ncertificate = "x"', "certificate"),
                      ('reserve_number_pattern = "("', "reserve_number_pattern")):
        f = tmp_path / "a.toml"
        f.write_text(body + "\n")
        with pytest.raises(ConfigError, match=key):
            config.load(f)


def test_flags_override_the_file(tmp_path):
    f = tmp_path / "archive.toml"
    f.write_text(f'data_dir = "{tmp_path}/d"\nlisten = "127.0.0.1:1234"\naccept_unknown_departments = false\n')
    args = build_parser().parse_args(["serve", "--config", str(f), "--listen", "127.0.0.1:0",
                                      "--db", "sqlite:////x.db"])
    cfg = load_config(args)
    assert cfg.listen == "127.0.0.1:0" and cfg.db_url == "sqlite:////x.db"
    assert cfg.data_dir == tmp_path / "d" and cfg.accept_unknown_departments is False
    assert cfg.effective_blobs_url == str(tmp_path / "d" / "blobs")
