from pathlib import Path

import pytest

from appliance.errors import ConfigError
from appliance.settings import Settings, describe, load_settings, redact, reference


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "appliance.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_any_source() -> None:
    settings = load_settings(environ={})
    assert settings == Settings()
    assert settings.server.host == "127.0.0.1"
    assert settings.server.port == 8000
    assert settings.data_dir == Path("data")
    assert settings.models_dir == Path("models")
    assert settings.embedder.kind == "sentence-transformers"
    assert settings.embedder.model == "all-MiniLM-L6-v2"
    assert settings.index.kind == "qdrant-edge"
    assert settings.reranker.kind == "none"
    assert settings.recommend.context_weight == 0.7
    assert settings.feedback.neutral_rating == 2.5
    assert settings.feedback.half_life_days == 90.0


def test_toml_file_then_environment(tmp_path: Path) -> None:
    config = _toml(
        tmp_path,
        '[server]\nhost = "192.0.2.1"\nport = 8100\n\n[recommend]\ncontext_weight = 0.4\n',
    )
    settings = load_settings(
        config, environ={"APPLIANCE_SERVER__PORT": "9000", "APPLIANCE_DATA_DIR": "/x"}
    )
    # The file's values survive where the environment says nothing.
    assert settings.server.host == "192.0.2.1"
    assert settings.recommend.context_weight == 0.4
    # The environment wins over the file, and its strings are converted to the field types.
    assert settings.server.port == 9000
    assert settings.data_dir == Path("/x")
    # Untouched sections keep their defaults.
    assert settings.feedback.half_life_days == 90.0


def test_config_file_named_by_the_environment(tmp_path: Path) -> None:
    config = _toml(tmp_path, "[server]\nport = 8123\n")
    settings = load_settings(environ={"APPLIANCE_CONFIG": str(config)})
    assert settings.server.port == 8123


def test_overrides_win_over_environment(tmp_path: Path) -> None:
    config = _toml(tmp_path, "[server]\nport = 8100\n")
    settings = load_settings(
        config,
        environ={"APPLIANCE_SERVER__PORT": "9000", "APPLIANCE_DATA_DIR": "/x"},
        overrides={"server": {"port": 9100}, "data_dir": "/y"},
    )
    assert settings.server.port == 9100
    assert settings.data_dir == Path("/y")


def test_overrides_merge_into_sections_instead_of_replacing_them() -> None:
    settings = load_settings(
        environ={"APPLIANCE_SERVER__HOST": "192.0.2.1"}, overrides={"server": {"port": 9100}}
    )
    assert settings.server.host == "192.0.2.1"
    assert settings.server.port == 9100


def test_unknown_key_in_environment_is_rejected() -> None:
    with pytest.raises(ConfigError, match="unknown field `prot`"):
        load_settings(environ={"APPLIANCE_SERVER__PROT": "9000"})


def test_unknown_section_in_environment_is_rejected() -> None:
    with pytest.raises(ConfigError, match="unknown field `sever`"):
        load_settings(environ={"APPLIANCE_SEVER__PORT": "9000"})


def test_unrelated_environment_variables_are_ignored() -> None:
    settings = load_settings(environ={"PATH": "/bin", "APPLIANCEX": "1", "HOME": "/root"})
    assert settings == Settings()


def test_unknown_key_in_toml_is_rejected(tmp_path: Path) -> None:
    config = _toml(tmp_path, "[embedder]\nmax_btach = 8\n")
    with pytest.raises(ConfigError, match="unknown field `max_btach`"):
        load_settings(config, environ={})


def test_unknown_top_level_key_in_toml_is_rejected(tmp_path: Path) -> None:
    config = _toml(tmp_path, 'data_dri = "/x"\n')
    with pytest.raises(ConfigError, match="unknown field `data_dri`"):
        load_settings(config, environ={})


def test_out_of_range_value_is_rejected() -> None:
    with pytest.raises(ConfigError, match="context_weight"):
        load_settings(environ={}, overrides={"recommend": {"context_weight": 1.5}})
    with pytest.raises(ConfigError, match="context_weight"):
        load_settings(environ={"APPLIANCE_RECOMMEND__CONTEXT_WEIGHT": "1.5"})


def test_out_of_range_port_is_rejected() -> None:
    with pytest.raises(ConfigError, match="port"):
        load_settings(environ={"APPLIANCE_SERVER__PORT": "70000"})


def test_unparseable_environment_value_is_rejected() -> None:
    with pytest.raises(ConfigError, match="port"):
        load_settings(environ={"APPLIANCE_SERVER__PORT": "eighty"})


def test_unreadable_toml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(_toml(tmp_path, "[server\nport = 1\n"), environ={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.toml", environ={})


def test_path_fields_are_paths(tmp_path: Path) -> None:
    config = _toml(tmp_path, 'models_dir = "/m"\n')
    settings = load_settings(config, environ={"APPLIANCE_DATA_DIR": "/x"})
    assert isinstance(settings.data_dir, Path)
    assert isinstance(settings.models_dir, Path)
    assert settings.data_dir == Path("/x")
    assert settings.models_dir == Path("/m")
    assert isinstance(load_settings(environ={}).data_dir, Path)


def test_settings_are_frozen() -> None:
    settings = load_settings(environ={})
    with pytest.raises(AttributeError):
        settings.server.port = 1  # type: ignore[misc]


def test_switchable_from_the_environment() -> None:
    assert load_settings(environ={}).reranker.switchable is True
    off = load_settings(environ={"APPLIANCE_RERANKER__SWITCHABLE": "false"})
    assert off.reranker.switchable is False


def test_redact_masks_secrets_and_url_credentials() -> None:
    tree = {
        "api_key": "sk-123",
        "section": {
            "token": "abc",
            "db_password": "hunter2",
            "client_secret": "",
            "refresh_token": None,
            "api_key_env": "OPENAI_API_KEY",
            "max_keys": 3,
            "key_list": ["a", "b"],
            "url": "https://user:p@ss@host.example:8443/v1?key=1",
            "plain_url": "http://127.0.0.1:8080/v1",
            "mail": "ops@example.com",
        },
        "port": 8000,
    }

    assert redact(tree) == {
        "api_key": "***",
        "section": {
            "token": "***",
            "db_password": "***",
            "client_secret": "",
            "refresh_token": None,
            "api_key_env": "OPENAI_API_KEY",
            "max_keys": 3,
            "key_list": "***",
            "url": "https://***@host.example:8443/v1?key=1",
            "plain_url": "http://127.0.0.1:8080/v1",
            "mail": "ops@example.com",
        },
        "port": 8000,
    }


def test_redact_leaves_the_default_settings_as_they_are() -> None:
    described = describe(load_settings(environ={}))
    assert redact(described) == described


def test_the_readme_lists_every_setting_as_the_reference_does() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    rows = [f"| `{name}` | `{default}` | {doc} |" for name, default, doc in reference()]
    assert "\n".join(rows) in readme, (
        "README's Configuration table: paste `appliance config --reference`"
    )
