"""Agent configuration: defaults, every documented key, and clear errors."""
import pathlib
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
        ("[agent]\nmodee = 'photo'\n", "unknown key(s) in"),
        ("[agent]\nmode = 'selfie'\n", "unknown mode 'selfie'"),
        ("[archive]\nadress = 'x'\n", "[archive]"),
        ("[[devices]]\nmake = 'Canon'\n", "make and model are required"),
        ("[agent\n", "is not valid TOML"),
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
