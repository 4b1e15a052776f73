"""Settings load once, fail fast with the key, and the CLI exposes them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from radnode import __version__
from radnode.cli import main
from radnode.settings import SettingsError, load
from radnode.uids import derive_uid, is_valid_uid


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("RADNODE_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def test_defaults_and_environment_override_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "site.yaml"
    cfg.write_text("ae_title: FILE_AE\nport: 4242\nlistener:\n  max_associations: 4\n")
    s = load(cfg)
    assert (s.ae_title, s.port, s.listener.max_associations, s.quiet_seconds) == ("FILE_AE", 4242, 4, 10.0)
    monkeypatch.setenv("RADNODE_PORT", "5151")
    monkeypatch.setenv("RADNODE_LISTENER__MAX_ASSOCIATIONS", "9")
    s = load(cfg)
    assert (s.ae_title, s.port, s.listener.max_associations) == ("FILE_AE", 5151, 9)


def test_config_path_from_environment_and_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "radnode.yaml").write_text("ae_title: CWD_AE\n")
    assert load().ae_title == "CWD_AE"
    other = tmp_path / "other.yaml"
    other.write_text("ae_title: ENV_AE\n")
    monkeypatch.setenv("RADNODE_CONFIG", str(other))
    assert load().ae_title == "ENV_AE"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("port: 70000\n", "port: Input should be less than or equal to 65535"),
        ("listener:\n  max_asociations: 3\n", "listener.max_asociations: Extra inputs are not permitted"),
        ("ae_title: 'THIS TITLE IS FAR TOO LONG'\n", "ae_title: Value error"),
        ("quiet_seconds: -1\n", "quiet_seconds: Input should be greater than 0"),
        ("- a\n- b\n", "the top level must be a mapping"),
        ("port: [1\n", "not valid YAML"),
    ],
)
def test_invalid_file_names_key_and_reason(tmp_path: Path, text: str, expected: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    with pytest.raises(SettingsError) as err:
        load(cfg)
    assert expected in str(err.value)
    assert str(cfg) in str(err.value)


def test_cli_fails_at_start_on_invalid_file(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("port: nope\n")
    res = CliRunner().invoke(main, ["--config", str(cfg), "config", "show"])
    assert res.exit_code == 2
    assert "port: Input should be a valid integer" in res.output


def test_config_show_masks_secrets(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("database:\n  url: postgresql://radnode:hunter2@db/radnode\n")
    res = CliRunner().invoke(main, ["--config", str(cfg), "config", "show", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert "hunter2" not in res.output
    assert data["database"]["url"] == "**********"
    assert data["ae_title"] == "RADNODE" and data["port"] == 11112


def test_console_script_version_and_help() -> None:
    out = subprocess.run([sys.executable, "-m", "radnode.cli", "--version"], capture_output=True, text=True, check=True)
    assert __version__ in out.stdout
    out = subprocess.run([sys.executable, "-m", "radnode.cli", "--help"], capture_output=True, text=True, check=True)
    for cmd in ("listen", "serve", "studies", "config", "demo"):
        assert cmd in out.stdout


def test_uid_grammar_and_derivation() -> None:
    assert is_valid_uid("1.2.840.10008.5.1.4.1.1.4")
    for bad in ("1.2.3/../../x", "", "1..2", "01.2", "1.2.", "a.b", "1." + "2" * 70, None, "../x"):
        assert not is_valid_uid(bad)
    a, b = derive_uid("job-1", "seg"), derive_uid("job-1", "sr")
    assert a == derive_uid("job-1", "seg") and a != b
    assert is_valid_uid(a) and a.startswith("2.25.")


def test_the_example_configuration_is_valid() -> None:
    example = Path(__file__).resolve().parents[3] / "config" / "radnode.example.yaml"
    s = load(example)
    assert s.peers[0].ae_title == "PACS1"
    assert s.listener.extra_called_aes[0].application == "glioma"
    # A relative path in the file is made absolute once, against the working directory at start.
    assert s.queue.max_attempts == 3 and s.routing.rules_file == Path.cwd() / "config" / "routing.yaml"


def test_radnode_web_port_sets_the_web_port_for_every_entry_point(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """``$RADNODE_WEB_PORT`` (README) reaches ``web.port``, which ``radnode serve`` and ``radnode web`` both read."""
    monkeypatch.delenv("RADNODE_WEB__PORT", raising=False)
    monkeypatch.setenv("RADNODE_WEB_PORT", "18081")
    assert load().web.port == 18081
    monkeypatch.setenv("RADNODE_WEB__PORT", "18082")  # the nested form wins
    assert load().web.port == 18082


def test_relative_path_settings_are_made_absolute(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RADNODE_DATA_DIR", "data")
    s = load()
    assert s.data_dir == tmp_path / "data" and s.data_dir.is_absolute()

