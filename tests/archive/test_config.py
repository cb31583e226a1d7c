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
    blobs = text[text.index("\n[blobs]\n"):text.index("\n[tls]\n")]
    for field in config.ArchiveConfig.__dataclass_fields__:
        if field.startswith("blobs_"):  # the [blobs] table
            key = "url" if field == "blobs_url" else field.removeprefix("blobs_")
            assert re.search(rf"^{key} = ", blobs, re.M), f"[blobs] {key} is not in the example"
        elif field not in ("tls", "audit_syslog", "login", "oidc"):  # tables: [tls], [audit], [login], [oidc]
            assert re.search(rf"^#? ?{field} = ", text, re.M), f"{field} is not in the example"
    login = text[text.index("\n[login]\n"):text.index("\n[oidc]\n")]
    for field in config.LoginConfig.__dataclass_fields__:
        assert re.search(rf"^{field} = ", login, re.M), f"[login] {field} is not in the example"
    oidc = text[text.index("\n[oidc]\n"):]
    for field in config.OidcConfig.__dataclass_fields__:
        assert re.search(rf"^# {field}(_file)? = ", oidc, re.M), f"[oidc] {field} is not in the example"
    for field in config.TlsConfig.__dataclass_fields__:
        assert re.search(rf"^# {field} = ", text, re.M)
    assert re.search(r"^\[audit\]\n(#.*\n)*#? ?syslog = ", text, re.M), "[audit] syslog is not in the example"


def test_bad_values_name_the_key(tmp_path):
    for body, key in (('listen = 5', "listen"), ('nonsense = 1', "nonsense"),
                      ('max_workers = true', "max_workers"), ('listen = "nowhere"', "listen"),
                      ('[tls]\ncertificate = "x"', "certificate"),
                      ('reserve_number_pattern = "("', "reserve_number_pattern"),
                      ('[tls]\nclient_ca = "ca.crt"', r"\[tls\] client_ca without cert, key"),
                      ('max_workers = "8"', "max_workers must be int"),
                      ('[blobs]\npart_size_mib = 4', "part_size_mib"), ('[blobs]\nbucket = "x"', "bucket"),
                      ('[blobs]\naddressing_style = "sideways"', "addressing_style"),
                      ('blobs_url = "/a"\n[blobs]\nurl = "/b"', "blobs_url"),
                      ('[login]\ncooldown_s = 0', "login.cooldown_s"), ('[login]\nlockout = 1', "lockout"),
                      ('[oidc]\nissuer = "https://idp.example"', r"\[oidc\] needs client_id, redirect_url"),
                      ('[oidc]\nissuer = "http://idp.example"\nclient_id = "a"\nclient_secret = "s"\n'
                       'redirect_url = "https://archive.example/auth/oidc/callback"', "oidc.issuer must be an https"),
                      ('[oidc]\nissuer = "https://idp.example"\nclient_id = "a"\nclient_secret = "s"\n'
                       'redirect_url = "https://a.example/cb"\nscopes = ["profile"]', "openid"),
                      ('http_trusted_proxies = "10.0.0.1"', "http_trusted_proxies")):
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


@pytest.mark.parametrize("body, named", [
    ('[tls]\nclient_ca = "/etc/bildsluss/ca.crt"\n', ["[tls] client_ca without cert, key"]),
    ('grace_period_s = "ten"\n', ["grace_period_s must be int or float", "'ten'"]),
    ('[audit]\nsyslogg = "udp://x:514"\n', ["[audit]", "syslogg"]),
])
def test_serve_with_a_bad_file_is_exit_2_naming_file_key_and_type(tmp_path, capsys, body, named):
    from archive_server.cli import main

    f = tmp_path / "archive.toml"
    f.write_text(body)
    assert main(["serve", "--config", str(f), "--data", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    for part in [str(f), *named]:
        assert part in err, (part, err)


def test_version_is_printed_and_the_data_dir_of_the_service_is_its_state_directory(monkeypatch, capsys):
    from archive_server.cli import main
    from bildsluss_common import __version__

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"bildsluss-archive {__version__}"
    # systemd's StateDirectory= (the packaged unit) says where the data is.
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/bildsluss-archive")
    assert config.default_data_dir() == pathlib.Path("/var/lib/bildsluss-archive")
def test_the_blobs_table(tmp_path):
    f = tmp_path / "archive.toml"
    f.write_text('[blobs]\nurl = "s3://archive/region-a"\npart_size_mib = 16\nprofile = "bildsluss"\n')
    cfg = config.load(f)
    assert cfg.effective_blobs_url == "s3://archive/region-a"
    options = cfg.s3_options()
    assert (options.part_size, options.profile, options.addressing_style) == (16 << 20, "bildsluss", "path")
    args = build_parser().parse_args(["serve", "--config", str(f), "--blobs", "/srv/blobs"])
    assert load_config(args).effective_blobs_url == "/srv/blobs"
