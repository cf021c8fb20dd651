"""Configuration: every option from TOML and flags, with clear errors for bad values."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import certifi
import pytest
import trustme

from exchange_fuse import config

REPOSITORY = Path(__file__).resolve().parents[2]
BASE = {"tenant": "contoso.onmicrosoft.com", "client_id": "app-id", "mailbox": "a@example.com"}
SECRET = {config.SECRET_ENVIRONMENT_VARIABLE: "s3cret"}

# For every option: a TOML value, and what the configuration holds for it.
GOOD: dict[str, tuple[Any, str, Any]] = {
    "mountpoint": ("/mnt/mail", "mountpoint", Path("/mnt/mail")),
    "tenant": ("t.example", "tenant", "t.example"),
    "client_id": ("abc", "client_id", "abc"),
    "mailbox": (
        ["x@example.com", "y@example.com"],
        "mailboxes",
        ("x@example.com", "y@example.com"),
    ),
    "cloud": ("usgov", "graph_url", "https://graph.microsoft.us/v1.0"),
    "graph_url": ("https://graph.example/v1.0/", "graph_url", "https://graph.example/v1.0"),
    "authority_url": ("https://login.example/t", "authority_url", "https://login.example/t"),
    "ca_bundle": (certifi.where(), "ca_bundle", Path(certifi.where())),
    "proxy": ("http://proxy:3128", "proxy", "http://proxy:3128"),
    "cache_dir": ("/var/cache/x", "cache_dir", Path("/var/cache/x")),
    "cache_max_size": ("1.5G", "cache_max_size", int(1.5 * 1024**3)),
    "read_only": (True, "read_only", True),
    "inline": (True, "inline", True),
    "hidden_folders": (True, "hidden_folders", True),
    "xattrs": (True, "xattrs", True),
    "uid": (1000, "uid", 1000),
    "gid": (100, "gid", 100),
    "umask": ("027", "umask", 0o027),
    "allow_other": (True, "allow_other", True),
    "poll_interval": (30, "poll_interval", 30.0),
    "timeout": (5.5, "timeout", 5.5),
    "request_timeout": (12, "request_timeout", 12.0),
    "retry_attempts": (3, "retry_attempts", 3),
    "retry_time": (20, "retry_time", 20.0),
    "retry_backoff": (0.25, "retry_backoff", 0.25),
    "log_level": ("debug", "log_level", "DEBUG"),
    "log_file": ("/tmp/exchange-mount.log", "log_file", Path("/tmp/exchange-mount.log")),
    "on_empty_message": ("move:Inbox/Done", "on_empty_message", "move:Inbox/Done"),
    "name_template": ("{subject}_{attachment}", "name_template", "{subject}_{attachment}"),
    "include": (["*.pdf"], "include", ("*.pdf",)),
    "exclude": ("*.tmp", "exclude", ("*.tmp",)),
    "exclude_folder": (["Junk Email"], "exclude_folder", ("Junk Email",)),
}
BAD: dict[str, Any] = {
    "mountpoint": "",
    "tenant": 7,
    "client_id": "",
    "mailbox": [1],
    "cloud": "mars",
    "graph_url": "",
    "authority_url": [],
    "ca_bundle": 3,
    "proxy": "",
    "cache_dir": True,
    "cache_max_size": "lots",
    "read_only": "yes",
    "inline": 1,
    "hidden_folders": "no",
    "xattrs": "on",
    "uid": -1,
    "gid": "group",
    "umask": "999",
    "allow_other": "true",
    "poll_interval": 0,
    "timeout": "soon",
    "request_timeout": -1,
    "retry_attempts": "many",
    "retry_time": 0,
    "retry_backoff": "fast",
    "log_level": "verbose",
    "log_file": "",
    "on_empty_message": "shred",
    "name_template": "{subject.__class__}",
    "include": 5,
    "exclude": {"a": 1},
    "exclude_folder": [""],
}
FILES = {"client_secret_file", "certificate_file"}  # tried below with real files


def build(toml: dict[str, Any], flags: dict[str, Any] | None = None, **kw: Any) -> config.Config:
    kw.setdefault("environment", SECRET)
    return config.build("/mnt/mail", flags or {}, {**BASE, **toml}, **kw)


def test_the_tables_cover_every_option() -> None:
    keys = {option.key for option in config.OPTIONS}
    assert keys == set(GOOD) | FILES
    assert keys == set(BAD) | FILES


@pytest.mark.parametrize("key", sorted(GOOD))
def test_each_option_is_read_from_toml(key: str) -> None:
    value, field, expected = GOOD[key]
    settings = (
        config.build(None, {}, {**BASE, key: value}, environment=SECRET)
        if (key == "mountpoint")
        else build({key: value})
    )
    assert getattr(settings, field) == expected


@pytest.mark.parametrize("key", sorted(BAD))
def test_each_bad_value_is_rejected_naming_the_option(key: str) -> None:
    with pytest.raises(config.ConfigError) as error:
        build({key: BAD[key]})
    assert str(error.value).startswith(f"{key}: "), str(error.value)
    assert repr(BAD[key]) in str(error.value)


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("mailbox", [], "at least one"),
        ("mailbox", "not an address", "not a mailbox address"),
        ("umask", 22, 'as text, such as "022"'),
        ("proxy", "notaurl", "proxy URL"),
        ("graph_url", "http://graph.example/v1.0", "https://"),
        ("authority_url", "notaurl", "https://"),
        ("ca_bundle", "/nonexistent.pem", "no such file"),
        ("ca_bundle", "/etc/passwd", "not a PEM file"),
        ("log_file", "/tmp", "not a directory"),
        ("log_file", "/nonexistent/dir/x.log", "does not exist"),
        ("uid", 99999999999, "from 0 to"),
        ("gid", float("inf"), "whole number"),
        ("poll_interval", float("nan"), "positive number"),
        ("timeout", float("inf"), "positive number"),
        ("proxy", "http://[::1", "proxy URL"),
        ("name_template", "{subject:>99999999999}", "field width"),
    ],
)
def test_values_that_would_only_fail_later_are_refused_up_front(
    key: str, value: Any, words: str
) -> None:
    with pytest.raises(config.ConfigError) as error:
        build({key: value})
    assert str(error.value).startswith(f"{key}: ") and words in str(error.value)


def test_flags_override_the_file_and_their_errors_name_the_flag() -> None:
    settings = build({"poll_interval": 30}, {"poll_interval": "5"})
    assert settings.poll_interval == 5.0
    with pytest.raises(config.ConfigError, match=r"^--poll-interval: .*'never'"):
        build({}, {"poll_interval": "never"})


def test_unknown_keys_and_unreadable_files(tmp_path: Path) -> None:
    path = tmp_path / "mount.toml"
    path.write_text('tenant = "t"\nmailboxes = ["a@example.com"]\ncach_dir = "/x"\n')
    with pytest.raises(config.ConfigError, match="unknown option 'cach_dir'"):
        config.read_toml(path)
    path.write_text("tenant = \n")
    with pytest.raises(config.ConfigError, match="not valid TOML"):
        config.read_toml(path)
    path.write_bytes(b'tenant = "\xff\xfe"\n')
    with pytest.raises(config.ConfigError, match="not valid TOML"):
        config.read_toml(path)
    with pytest.raises(config.ConfigError, match="no such configuration file"):
        config.read_toml(tmp_path / "absent.toml")
    path.write_text('tenant = "t"\nmailboxes = ["a@example.com"]\n')
    assert config.read_toml(path)["mailbox"] == ["a@example.com"]


def test_required_options_and_defaults() -> None:
    with pytest.raises(config.ConfigError, match="--client-id is required"):
        config.build("/mnt", {}, {"tenant": "t", "mailbox": "a@b"}, environment=SECRET)
    with pytest.raises(config.ConfigError, match="no mountpoint"):
        config.build(None, {}, BASE, environment=SECRET)
    settings = build({})
    assert settings.graph_url == "https://graph.microsoft.com/v1.0"
    assert settings.authority_url == "https://login.microsoftonline.com/contoso.onmicrosoft.com"
    assert settings.scope == "https://graph.microsoft.com/.default"
    assert (settings.poll_interval, settings.read_only, settings.on_empty_message) == (
        60.0, False, "delete",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("cloud", "graph", "login"),
    [
        ("global", "https://graph.microsoft.com", "https://login.microsoftonline.com"),
        ("usgov", "https://graph.microsoft.us", "https://login.microsoftonline.us"),
        ("usgov-dod", "https://dod-graph.microsoft.us", "https://login.microsoftonline.us"),
        ("china", "https://microsoftgraph.chinacloudapi.cn", "https://login.chinacloudapi.cn"),
    ],
)
def test_national_clouds(cloud: str, graph: str, login: str) -> None:
    settings = build({"cloud": cloud})
    assert settings.graph_url == f"{graph}/v1.0"
    assert settings.scope == f"{graph}/.default"
    assert settings.authority_url == f"{login}/contoso.onmicrosoft.com"


def test_secret_sources_in_order(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-file\n")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "client-secret").write_text("from-credential")

    both = {
        config.SECRET_ENVIRONMENT_VARIABLE: "from-env",
        "CREDENTIALS_DIRECTORY": str(credentials),
    }
    assert build({"client_secret_file": str(secret_file)}, environment=both).client_secret == (
        "from-file"
    )
    assert build({}, environment=both).client_secret == "from-env"
    only_systemd = {"CREDENTIALS_DIRECTORY": str(credentials)}
    assert build({}, environment=only_systemd).client_secret == "from-credential"

    with pytest.raises(config.ConfigError, match="no client secret"):
        build({}, environment={})
    secret_file.write_text("  \n")
    with pytest.raises(config.ConfigError, match="is empty"):
        build({"client_secret_file": str(secret_file)})
    with pytest.raises(config.ConfigError, match="cannot read"):
        build({"client_secret_file": str(tmp_path / "missing")})
    assert "from-file" not in repr(build({}, environment={**SECRET}))


def test_certificate_credentials(tmp_path: Path) -> None:
    authority = trustme.CA(key_type=trustme.KeyType.RSA)
    certificate = authority.issue_cert("app.example", key_type=trustme.KeyType.RSA)
    pem = tmp_path / "app.pem"
    certificate.private_key_and_cert_chain_pem.write_to_path(str(pem))

    settings = build({"certificate_file": str(pem)}, environment={})
    assert settings.client_secret is None
    assert settings.certificate is not None
    assert re.fullmatch(r"[0-9A-F]{40}", settings.certificate.thumbprint or "", re.IGNORECASE)

    with pytest.raises(config.ConfigError, match="not both"):
        build({"certificate_file": str(pem), "client_secret_file": str(pem)})
    elliptic = tmp_path / "elliptic.pem"
    trustme.CA().issue_cert("app.example").private_key_and_cert_chain_pem.write_to_path(
        str(elliptic)
    )
    with pytest.raises(config.ConfigError, match="must be an RSA key"):
        build({"certificate_file": str(elliptic)}, environment={})
    broken = tmp_path / "broken.pem"
    broken.write_text("not a certificate")
    with pytest.raises(config.ConfigError, match=r"certificate_file: .* not usable"):
        build({"certificate_file": str(broken)}, environment={})


def test_the_configuration_reference_documents_every_option() -> None:
    reference = (REPOSITORY / "docs" / "configuration.md").read_text()
    for option in config.OPTIONS:
        assert f"`{option.key}`" in reference, option.key
