"""Agent configuration: defaults, every documented key, and clear errors."""
import pathlib
import sys
import tomllib

import pytest

from agent import config
from agent.card.model import Device, Mode

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "packaging" / "agent.example.toml"


def test_defaults_work_without_a_file():
    cfg = config.load(None)
    assert cfg.archive.address == "127.0.0.1:50051"
    assert cfg.mode is Mode.PHOTO and cfg.devices == ()
    assert cfg.agent_id


def test_example_file_loads_and_sets_every_key():
    cfg = config.load(EXAMPLE)
    assert cfg.department == "SE2321000016-15CQ"
    assert Device("Canon", "Canon EOS 250D", "083051006721") in cfg.devices
    # Every key of the example is one the loader knows (none silently ignored).
    data = tomllib.loads(EXAMPLE.read_text())
    config.from_dict(data)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[agent]\nmodee = 'photo'\n", "[agent] unknown key(s): modee"),
        ("[agent]\nmode = 'selfie'\n", "unknown mode 'selfie'"),
        ("[archive]\nadress = 'x'\n", "[archive]"),
        ("[[devices]]\nmake = 'Canon'\n", "make and model are required"),
        ("[agent\n", "is not valid TOML"),
        ("[archive]\ninsecure = true\ntls_server_name = 'archive.region.test'\n",
         "tls_server_name is for TLS"),
    ],
)
def test_bad_files_name_the_problem(tmp_path, text, message):
    path = tmp_path / "agent.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError) as err:
        config.load(path)
    assert message in str(err.value)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(config.ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.toml")


def test_reserve_formats_are_loaded_and_checked(tmp_path):
    path = tmp_path / "agent.toml"
    path.write_text('[identity]\nreserve_formats = ["sll"]\n')
    assert [f.name for f in config.load(path).reserve_formats] == ["sll"]
    path.write_text('[identity]\nreserve_formats = ["nosuch"]\n')
    with pytest.raises(config.ConfigError, match="nosuch"):
        config.load(path)


@pytest.mark.parametrize("address", ["archive.region.se:50051", "ipv4:127.0.0.1:50051,10.0.0.9:50051"])
def test_plaintext_to_another_machine_is_refused_in_the_file(tmp_path, address):
    path = tmp_path / "agent.toml"
    path.write_text(f'[archive]\naddress = "{address}"\ninsecure = true\n')
    with pytest.raises(config.ConfigError, match="refusing plaintext .* is not this machine"):
        config.load(path)


def test_plaintext_to_this_machine_loads(tmp_path):
    path = tmp_path / "agent.toml"
    path.write_text('[archive]\naddress = "ipv4:127.0.0.1:50051,127.0.0.2:50051"\ninsecure = true\n')
    assert config.load(path).archive.insecure is True


# -- issue 17: every key typed, every mistake an exit 2 naming file, key and type ------------

def _ingest_with(tmp_path, capsys, text):
    from agent import cli

    path = tmp_path / "agent.toml"
    path.write_text(text)
    card = tmp_path / "card"
    card.mkdir(exist_ok=True)
    code = cli.main(["ingest", str(card), "--config", str(path), "--insecure",
                     "--department", "SE2321000016-15CQ"])
    return code, capsys.readouterr().err, str(path)


@pytest.mark.parametrize("text, named", [
    ("[identity]\nbudgett_s = 3\n", ["[identity]", "budgett_s", "budget_s"]),
    ("[archive]\ncall_timeout_s = \"ten\"\n", ["[archive]", "call_timeout_s", "expected a number", "'ten'"]),
    ("[archive]\nchunk_bytes = 1.5\n", ["chunk_bytes", "expected a integer"]),
    ("[agent]\nid = 17\n", ["[agent] id", "expected a string"]),
    ("[daemon]\nnotify = \"yes\"\n", ["[daemon] notify", "expected a boolean"]),
    ("[daemon]\nfilesystems = \"vfat\"\n", ["[daemon] filesystems", "expected a list of strings"]),
    ("[[devices]]\nmake = \"Canon\"\nmodel = \"EOS\"\nserail = \"1\"\n", ["[[devices]] #1", "serail"]),
    ("[deamon]\nworkers = 1\n", ["deamon", "[daemon]"]),
    ("[archive]\ntls_ca = \"/etc/bildsluss/ca.crt\"\n", ["tls_ca without tls_cert, tls_key", "all three"]),
    ("[archive]\ntls_cert = \"a.crt\"\ntls_key = \"a.key\"\n", ["without tls_ca"]),
])
def test_a_wrong_key_or_type_is_exit_2_naming_file_key_and_type(tmp_path, capsys, text, named):
    code, err, path = _ingest_with(tmp_path, capsys, text)
    assert code == 2, err
    for part in [path, *named]:
        assert part in err, (part, err)


def test_the_schema_is_the_dataclasses_and_the_example_names_every_key():
    import dataclasses
    import re

    assert set(config.SCHEMA["archive"]) == {f.name for f in dataclasses.fields(config.ArchiveConfig)}
    assert set(config.SCHEMA["daemon"]) == {f.name for f in dataclasses.fields(config.DaemonConfig)}
    assert set(config.SCHEMA["cameras"]) == {f.name for f in dataclasses.fields(config.CameraConfig)}
    text = EXAMPLE.read_text()
    data = tomllib.loads(text)
    # Every key of the example is in the schema with its type (from_dict checks both) ...
    config.from_dict(data, source=str(EXAMPLE))
    assert set(data) == set(config.SCHEMA)
    # ... and every key of the schema is in the example, each in its own table's section.
    sections = re.split(r"^\[+([a-z_.]+)\]+[ \t]*(?:#.*)?$", text, flags=re.M)
    body = {name.split(".")[0]: "" for name in sections[1::2]}
    for name, section in zip(sections[1::2], sections[2::2]):
        body[name.split(".")[0]] += section
    for table, keys in config.SCHEMA.items():
        for key in keys:
            assert re.search(rf"^#? ?{key}\b", body[table], re.M) or f"{key} (" in body[table], \
                f"[{table}] {key} is not in {EXAMPLE.name}"
    docs = (ROOT / "docs" / "configuration.md").read_text()
    for table, keys in config.SCHEMA.items():
        for key in keys:
            assert key in docs, f"[{table}] {key} is not in docs/configuration.md"


def test_ingest_help_says_where_the_default_mode_comes_from(tmp_path, capsys):
    """The help once said "default photo" while the config's [agent] mode was used."""
    from agent import cli

    with pytest.raises(SystemExit):
        cli.main(["ingest", "--help"])
    assert "default: [agent] mode of --config, else photo" in " ".join(capsys.readouterr().out.split())
    path = tmp_path / "agent.toml"
    path.write_text('[agent]\nmode = "assault"\n')
    assert config.load(path).mode is Mode.ASSAULT


def test_the_program_skips_the_last_garbage_collection_at_exit(monkeypatch):
    """Issue 12, the agent's end: run as the program, it freezes what is alive
    before the interpreter's last collection; called with arguments (a test, an
    embedding) it leaves the process's collector alone."""
    import gc

    from agent import cli

    registered: list = []
    monkeypatch.setattr(cli.atexit, "register", registered.append)
    with pytest.raises(SystemExit):
        cli.main(["ingest", "--help"])
    assert registered == []
    monkeypatch.setattr(sys, "argv", ["bildsluss-agent", "ingest", "--help"])
    with pytest.raises(SystemExit):
        cli.main()
    assert registered == [cli._skip_the_last_collection]
    try:
        registered[0]()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_a_home_folder_of_an_unknown_user_is_a_config_error_not_a_crash(tmp_path):
    """Found by fuzzing (issue 13): ``~nosuchuser/...`` made pathlib raise RuntimeError."""
    from agent.config import ConfigError, from_dict

    for table, key in (("agent", "spool_dir"), ("daemon", "state_dir")):
        with pytest.raises(ConfigError, match=f"{key}.*home folder"):
            from_dict({table: {key: "~no-such-bildsluss-user/spool"}})
    with pytest.raises(ConfigError, match="NUL"):
        from_dict({"daemon": {"mount_root": "/run/x\x00y"}})
