"""Everything up to an OMERO server: settings, refused and silent ports, secrets kept secret."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from scopeflow import ConfigurationError, OmeroSettings, OmeroUnavailable, load_settings
from tasks.storage.omero import OmeroRegistrar, RegistrationRequest
from tests.test_omero_support import closed_port, require_omero_py, silent_server

PASSWORD = "pa55-Wörd-never-shown"


def _settings(port: int, **extra: object) -> OmeroSettings:
    return OmeroSettings(host="127.0.0.1", port=port, username="alice", password=PASSWORD, **extra)


def test_flat_environment_variables_configure_omero(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SCOPEFLOW_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("SCOPEFLOW_OMERO_HOST", "omero.example.org")
    monkeypatch.setenv("SCOPEFLOW_OMERO_PORT", "14064")
    monkeypatch.setenv("SCOPEFLOW_OMERO_USERNAME", "alice")
    monkeypatch.setenv("SCOPEFLOW_OMERO_PASSWORD", PASSWORD)
    monkeypatch.setenv("SCOPEFLOW_OMERO__GROUP", "lab")  # the nested form works as well
    settings = load_settings().omero
    assert (settings.host, settings.port, settings.username, settings.group) == (
        "omero.example.org",
        14064,
        "alice",
        "lab",
    )
    assert settings.password is not None and settings.password.get_secret_value() == PASSWORD
    assert PASSWORD not in repr(settings) and PASSWORD not in str(load_settings())


def test_toml_section_and_code_override(monkeypatch, tmp_path: Path) -> None:
    toml = tmp_path / "scopeflow.toml"
    toml.write_text('[omero]\nhost = "toml-host"\nqueue_max_items = 7\n')
    monkeypatch.setenv("SCOPEFLOW_CONFIG", str(toml))
    monkeypatch.delenv("SCOPEFLOW_OMERO_HOST", raising=False)
    assert load_settings().omero.host == "toml-host"
    assert load_settings().omero.queue_max_items == 7
    monkeypatch.setenv("SCOPEFLOW_OMERO_HOST", "env-host")
    assert OmeroSettings(host="code-host").host == "code-host"


def test_unconfigured_omero_names_the_variables(monkeypatch) -> None:
    require_omero_py()
    for name in ("HOST", "USERNAME", "PASSWORD"):
        monkeypatch.delenv(f"SCOPEFLOW_OMERO_{name}", raising=False)
    with pytest.raises(ConfigurationError, match=r"SCOPEFLOW_OMERO_HOST.*SCOPEFLOW_OMERO_PASSWORD"):
        OmeroRegistrar(OmeroSettings(username="alice")).check()


def test_refused_port_fails_fast_naming_server_and_fix(caplog) -> None:
    require_omero_py()
    caplog.set_level(logging.DEBUG)
    port = closed_port()
    registrar = OmeroRegistrar(_settings(port, connect_timeout_s=30))
    start = time.monotonic()
    with pytest.raises(OmeroUnavailable) as info:
        registrar.check()
    assert time.monotonic() - start < 10  # refused at once, not retried for the 30 s allowed
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "refused" in message
    assert "SCOPEFLOW_OMERO_PORT" in message and "4064" in message
    _assert_secret_kept(caplog, info.value, registrar)


def test_port_that_never_answers_times_out_within_the_bound(caplog) -> None:
    require_omero_py()
    caplog.set_level(logging.DEBUG)
    with silent_server() as port:
        registrar = OmeroRegistrar(_settings(port, connect_timeout_s=1.2))
        start = time.monotonic()
        with pytest.raises(OmeroUnavailable) as info:
            registrar.check()
        elapsed = time.monotonic() - start
    assert 0.9 < elapsed < 8, f"connect_timeout_s=1.2 but the attempt took {elapsed:.2f} s"
    message = str(info.value)
    assert f"127.0.0.1:{port} did not answer within 1.2 s" in message
    assert "SCOPEFLOW_OMERO_CONNECT_TIMEOUT_S" in message
    _assert_secret_kept(caplog, info.value, registrar)


def test_missing_source_is_rejected_before_any_connection(tmp_path: Path) -> None:
    from scopeflow import OmeroRejected

    registrar = OmeroRegistrar(_settings(closed_port()))
    request = RegistrationRequest(path=tmp_path / "nope.ome.zarr", project="p", dataset="d")
    with pytest.raises(OmeroRejected, match=r"nope\.ome\.zarr does not exist"):
        registrar.register(request)


def _assert_secret_kept(caplog, exc: BaseException, registrar: OmeroRegistrar) -> None:
    texts = [str(exc), repr(exc), repr(registrar), caplog.text, str(exc.__cause__)]
    texts += [str(r.args) for r in caplog.records]
    for text in texts:
        assert PASSWORD not in text
