"""Every error scopeflow raises on purpose derives from :class:`ScopeflowError`.

ScopeflowError
 ├── ConfigurationError        a setting, file or option is wrong; the message names the fix
 │    └── MicroManagerNotInstalled   --mm-config given but no Micro-Manager found
 ├── HardwareError             the microscope (or its driver) failed while doing something
 ├── EnvelopeViolation         a command falls outside the safety envelope; nothing was done
 ├── CommandConflict           a command id was reused with a different payload
 ├── InvalidRequest            a well-formed request the edge cannot carry out as given (422)
 ├── JournalError              the frame journal cannot be written or read
 ├── ConversionError           a vendor file cannot be converted to OME-Zarr
 ├── LoopStalled               a live loop waits for frames the edge no longer sends
 └── EdgeClientError           talking to an edge agent failed
      ├── EdgeUnauthorized     the token is missing or wrong (HTTP 401)
      ├── EdgeRejected         the edge refused the command (HTTP 4xx); ``detail`` says why
      │    ├── EdgeForbidden    the token's role may not do this (HTTP 403)
      │    └── MicroscopeLeased another holder has the microscope (HTTP 423); ``lease`` says who
      ├── EdgeCertificateError the edge's TLS certificate is not trusted (give its CA file)
      └── EdgeUnavailable      the edge could not be reached (connection refused, timeout)
"""

from __future__ import annotations

__all__ = [
    "ChunksFailed",
    "CommandConflict",
    "ComputeUnavailable",
    "ConfigurationError",
    "ConversionError",
    "EdgeCertificateError",
    "EdgeClientError",
    "EdgeForbidden",
    "EdgeRejected",
    "EdgeUnauthorized",
    "EdgeUnavailable",
    "EnvelopeViolation",
    "HardwareError",
    "InvalidRequest",
    "JournalError",
    "LoopStalled",
    "MicroManagerNotInstalled",
    "MicroscopeLeased",
    "OmeroError",
    "OmeroLoginRefused",
    "OmeroNotInstalled",
    "OmeroRejected",
    "OmeroUnavailable",
    "ScopeflowError",
]


class ScopeflowError(Exception):
    """Root of every error scopeflow raises on purpose."""


class ConfigurationError(ScopeflowError):
    """Raised when a setting, a configuration file or a command-line option is invalid."""


class MicroManagerNotInstalled(ConfigurationError):
    """Raised when a Micro-Manager configuration is given but no Micro-Manager install is found."""


class HardwareError(ScopeflowError):
    """Raised when the microscope or its driver fails while executing a command."""


class EnvelopeViolation(ScopeflowError):
    """Raised when a command falls outside the safety envelope. Nothing moved, nothing queued.

    ``limit`` names the envelope field, ``value`` the offending value.
    """

    def __init__(self, message: str, *, limit: str, value: object) -> None:
        super().__init__(message)
        self.limit = limit
        self.value = value


class CommandConflict(ScopeflowError):
    """Raised when a command id that was already used arrives with a different payload."""


class InvalidRequest(ScopeflowError):
    """Raised when a well-formed request cannot be carried out as given: a sequence useq cannot
    expand (a time plan with a zero interval), more events than the edge takes per request or
    holds queued, a time the simulator does not answer about. Nothing was done.

    ``limit`` names the bound or the part of the request, ``value`` the offending value.
    """

    def __init__(self, message: str, *, limit: str, value: object) -> None:
        super().__init__(message)
        self.limit = limit
        self.value = value


class JournalError(ScopeflowError):
    """Raised when the frame journal cannot be written or read."""


class EdgeClientError(ScopeflowError):
    """Raised by the edge client when a request to an edge agent fails."""


class EdgeUnauthorized(EdgeClientError):
    """Raised when the edge agent answers 401: pass the token from the edge's --token-file."""


class EdgeRejected(EdgeClientError):
    """Raised when the edge agent refuses a command (HTTP 4xx). ``detail`` holds its reason."""

    def __init__(self, message: str, *, status_code: int, detail: object) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.detail = detail


class EdgeForbidden(EdgeRejected):
    """Raised when the edge answers 403: the token's role (e.g. ``read``) may not do this; ask
    the facility for a ``control`` token (``scopeflow edge user add NAME --role control``)."""


class MicroscopeLeased(EdgeRejected):
    """Raised when the edge answers 423: another holder leases the microscope. ``lease`` is
    the edge's `LeaseInfo` as a dict (holder, user, expires_at): wait for it to end or ask
    them."""

    @property
    def lease(self) -> dict[str, object]:
        detail = self.detail if isinstance(self.detail, dict) else {}
        lease = detail.get("lease")
        return lease if isinstance(lease, dict) else {}


class EdgeCertificateError(EdgeClientError):
    """Raised when the edge's TLS certificate cannot be verified: pass the CA that signed it
    (``ca_file=...``, ``SCOPEFLOW_EDGE_CA_FILE`` or the microscope's ``ca_file``)."""


class EdgeUnavailable(EdgeClientError):
    """Raised when the edge agent cannot be reached (refused connection, timeout, dropped link)."""


class ConversionError(ScopeflowError):
    """Raised when a vendor file cannot be converted to OME-Zarr; the message names the file,
    the problem and the fix. No store is left at the output path when this is raised."""


# -- batch processing on clusters (tasks.compute, flows.segment_dataset / restore_dataset) --


class ComputeUnavailable(ScopeflowError):
    """Raised when the cluster a compute profile names cannot be started or reached, or its
    workers never joined (batch jobs stuck in the queue, a wrong python or interface)."""


class ChunksFailed(ScopeflowError):
    """Raised by a batch flow when some chunks failed (the model raised, or the worker or batch
    job running them died). Finished chunks are kept: re-running the flow resumes from them.

    ``failed`` is the keys of the chunks that failed, ``done`` how many are finished.
    """

    def __init__(self, message: str, *, failed: list[str], done: int, total: int) -> None:
        super().__init__(message)
        self.failed = failed
        self.done = done
        self.total = total


__all__ += ["ChunksFailed", "ComputeUnavailable"]


# -- OMERO registration (tasks/storage/omero) --


class OmeroError(ScopeflowError):
    """Raised when registering in OMERO fails; the subclasses say whether a retry can help."""


class OmeroUnavailable(OmeroError):
    """Raised when the OMERO server cannot be reached, refuses the connection or times out.

    Retrying later can succeed; the spill-and-drain spool keeps the registration and retries.
    """


class OmeroLoginRefused(OmeroError):
    """Raised when the OMERO server refuses the user name / password or the group.

    Fix the credentials (SCOPEFLOW_OMERO_USERNAME, SCOPEFLOW_OMERO_PASSWORD, SCOPEFLOW_OMERO_GROUP);
    the spool keeps its registrations and retries meanwhile.
    """


class OmeroRejected(OmeroError):
    """Raised when one registration cannot succeed as given (unreadable source, unsupported pixel
    type, the server refused this image). Retrying it unchanged will not help.
    """


class OmeroNotInstalled(ConfigurationError):
    """Raised when omero-py (the ``omero`` extra) cannot be imported; the message says how to
    install it on Python 3.11 (ci/build_zeroc_ice.sh builds the zeroc-ice wheel it needs).
    """


__all__ += [
    "OmeroError",
    "OmeroLoginRefused",
    "OmeroNotInstalled",
    "OmeroRejected",
    "OmeroUnavailable",
]


class LoopStalled(ScopeflowError):
    """Raised when a live loop has asked for frames and none came for its frame timeout: the
    edge stopped, dropped the events or lost its camera. The message names the commands still
    waiting for frames and the edge's last error."""
