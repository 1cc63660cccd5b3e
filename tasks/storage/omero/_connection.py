"""Open a BlitzGateway session with bounded timeouts; turn Ice failures into scopeflow errors.

The password is passed to omero-py and nowhere else: it is not logged, not put in an error
message, not kept on any scopeflow object (settings hold it as a ``SecretStr``).
"""

from __future__ import annotations

import logging
from typing import Any

from scopeflow import (
    ConfigurationError,
    OmeroError,
    OmeroLoginRefused,
    OmeroNotInstalled,
    OmeroSettings,
    OmeroUnavailable,
)

__all__ = ["connect", "require_omero", "server_name"]

log = logging.getLogger(__name__)

_CONNECT_ATTEMPTS = 3  # omero.client.createSession tries three times on a connect timeout
_INSTALL_HINT = (
    "install the 'omero' extra: omero-py needs zeroc-ice 3.6.5, which does not build on "
    "Python 3.11 as released; build the patched wheel with ci/build_zeroc_ice.sh, then "
    "pip install <wheel> -e '.[omero]' (README, section OMERO)"
)


def require_omero() -> Any:
    """Import omero-py (with its gateway) or raise :class:`OmeroNotInstalled` naming the fix."""
    try:
        import omero
        import omero.clients  # noqa: F401 - registers the client classes
        import omero.gateway  # noqa: F401 - BlitzGateway lives here
    except ImportError as exc:
        raise OmeroNotInstalled(f"omero-py cannot be imported ({exc}): {_INSTALL_HINT}") from exc
    # omero-py's temp-dir cleanup logs at interpreter exit, after other handlers (Prefect's
    # console, pytest's capture) have closed their streams: keep it off the root logger
    logging.getLogger("omero.util.TempFileManager").propagate = False
    return omero


def server_name(settings: OmeroSettings) -> str:
    return f"{settings.host}:{settings.port}"


def connect(settings: OmeroSettings) -> Any:
    """A connected ``omero.gateway.BlitzGateway``; the caller must ``close()`` it.

    Reaching the server and logging in take at most ``settings.connect_timeout_s``.
    Raises :class:`OmeroUnavailable` (refused, unreachable, timed out), :class:`OmeroLoginRefused`
    (credentials or group), :class:`ConfigurationError` (host or credentials not set).
    """
    omero = require_omero()
    import Ice
    from omero.gateway import BlitzGateway

    username, password = _credentials(settings)
    attempt_ms = max(1, round(settings.connect_timeout_s * 1000 / _CONNECT_ATTEMPTS))
    client = omero.client(
        host=settings.host,
        port=settings.port,
        args=[
            f"--Ice.Override.ConnectTimeout={attempt_ms}",
            f"--Ice.Override.Timeout={max(1, round(settings.call_timeout_s * 1000))}",
        ],
    )
    client.setAgent("scopeflow")
    if settings.group:
        client.getImplicitContext().put(omero.constants.GROUP, settings.group)
    log.debug("connecting to OMERO at %s as %s", server_name(settings), username)
    try:
        client.createSession(username, password)
        gateway = BlitzGateway(client_obj=client)
        if not settings.secure:
            gateway.setSecure(False)
    except Exception as exc:
        _close_client(client)
        raise translate_error(exc, settings, Ice, omero) from exc
    return gateway


def translate_error(
    exc: BaseException, settings: OmeroSettings, ice: Any, omero: Any
) -> OmeroError:
    """The scopeflow error for an omero-py / Ice failure while talking to ``settings.host``."""
    import Glacier2

    where = f"OMERO at {server_name(settings)}"
    if isinstance(exc, ice.ConnectionRefusedException):
        return OmeroUnavailable(
            f"{where} refused the connection: check that the server runs and that host and port "
            "are right (SCOPEFLOW_OMERO_HOST, SCOPEFLOW_OMERO_PORT; OMERO listens on 4064)"
        )
    if isinstance(exc, ice.DNSException):
        return OmeroUnavailable(
            f"{where}: the host name does not resolve; fix SCOPEFLOW_OMERO_HOST"
        )
    timed_out = isinstance(exc, ice.TimeoutException) or (
        isinstance(exc, omero.ClientError) and "null object prox" in str(exc)
    )  # createSession gives up with that ClientError after three connect timeouts
    if timed_out:
        return OmeroUnavailable(
            f"{where} did not answer within {settings.connect_timeout_s:g} s: a firewall may drop "
            "the traffic, the port may not be OMERO's (Glacier2, 4064), or the server is "
            "overloaded; check host and port, or raise SCOPEFLOW_OMERO_CONNECT_TIMEOUT_S"
        )
    if isinstance(exc, Glacier2.PermissionDeniedException | Glacier2.CannotCreateSessionException):
        return OmeroLoginRefused(
            f"{where} refused the login of user {settings.username!r}"
            f"{f' in group {settings.group!r}' if settings.group else ''}: check "
            "SCOPEFLOW_OMERO_USERNAME, SCOPEFLOW_OMERO_PASSWORD and SCOPEFLOW_OMERO_GROUP"
        )
    if isinstance(exc, omero.SecurityViolation):
        return OmeroLoginRefused(
            f"{where}: user {settings.username!r} may not do this"
            f"{f' in group {settings.group!r}' if settings.group else ''} ({exc.message}); "
            "check SCOPEFLOW_OMERO_GROUP and the user's group membership"
        )
    if isinstance(exc, ice.LocalException):
        return OmeroUnavailable(
            f"{where} could not be reached or dropped the connection ({type(exc).__name__}); "
            "the spool retries, or check the network and the server"
        )
    if isinstance(exc, omero.ServerError):
        return OmeroError(f"{where} failed: {type(exc).__name__}: {exc.message}")
    return OmeroError(f"{where} failed: {type(exc).__name__}: {exc}")


def _credentials(settings: OmeroSettings) -> tuple[str, str]:
    missing = [
        env
        for env, value in (
            ("SCOPEFLOW_OMERO_HOST", settings.host),
            ("SCOPEFLOW_OMERO_USERNAME", settings.username),
            ("SCOPEFLOW_OMERO_PASSWORD", settings.password),
        )
        if not value
    ]
    if missing:
        raise ConfigurationError(
            f"OMERO is not configured: set {', '.join(missing)} (or [omero] in scopeflow.toml)"
        )
    assert settings.username is not None and settings.password is not None
    return settings.username, settings.password.get_secret_value()


def _close_client(client: Any) -> None:
    try:
        client.__del__()  # omero.client's close: ends the session and the Ice communicator
    except Exception as exc:  # closing after a failure: the first error is the one to report
        log.debug("closing the OMERO client failed too: %s", type(exc).__name__)
