"""What the OMERO tests share: omero-py (required in CI), ports that refuse or never answer, and
a stand-in destination for the spool. Also the install check itself."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scopeflow import OmeroUnavailable
from tasks.storage.omero import RegistrationRequest, RegistrationResult

INSTALL_HINT = (
    "omero-py is not installed: build the zeroc-ice 3.6.5 wheel with ci/build_zeroc_ice.sh, "
    "then pip install <wheel> -e '.[omero]' (README, section OMERO)"
)


def require_omero_py() -> None:
    """Skip (or, with SCOPEFLOW_REQUIRE_OMERO_PY=1 as in CI, fail) when omero-py is missing."""
    try:
        import omero.gateway  # noqa: F401
    except ImportError as exc:
        if os.environ.get("SCOPEFLOW_REQUIRE_OMERO_PY") == "1":
            pytest.fail(f"SCOPEFLOW_REQUIRE_OMERO_PY=1 but omero-py does not import ({exc})")
        pytest.skip(f"{INSTALL_HINT} ({exc})")


def test_omero_py_imports_with_ice_3_6_5() -> None:
    require_omero_py()
    import Ice
    from omero.gateway import BlitzGateway, MapAnnotationWrapper

    assert Ice.stringVersion() == "3.6.5"
    assert hasattr(BlitzGateway, "createImageFromNumpySeq")
    assert hasattr(MapAnnotationWrapper, "setValue")


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and then never says a word (not OMERO's protocol)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.05)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                accepted.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        server.close()
        for conn in accepted:
            conn.close()
    assert accepted, "the client never connected to the silent server"


class DirRegistrar:
    """Test-only stand-in for an OMERO server that is up: registrations become files in ``root``.

    It honours the Uploader contract like OmeroRegistrar: a key it holds is not registered again.
    ``down`` (a file) makes it unreachable while it exists. ``die_at`` kills this process with
    SIGKILL right after the ``die_at``-th registration was created and before it is returned: the
    worst moment for the spool (the server has it, the spool has no result yet).
    Logs: ``calls.log`` (one line per call), ``created.log`` (one line per created image).
    """

    def __init__(
        self, root: Path, *, down: Path | None = None, die_at: int = 0, delay_s: float = 0.0
    ) -> None:
        self.root = Path(root)
        (self.root / "images").mkdir(parents=True, exist_ok=True)
        self.down = down
        self.die_at = die_at
        self.delay_s = delay_s

    def register(self, request: RegistrationRequest) -> RegistrationResult:
        if self.down is not None and self.down.exists():
            raise OmeroUnavailable(f"stand-in server {self.root} is down ({self.down} exists)")
        _append(self.root / "calls.log", request.key)
        image = self.root / "images" / f"{request.key}.json"
        if image.exists():
            earlier = RegistrationResult.model_validate_json(image.read_bytes())
            return earlier.model_copy(update={"reused": True})
        time.sleep(self.delay_s)
        created = len(self.created())
        result = RegistrationResult(
            key=request.key,
            project_id=1,
            dataset_id=2,
            image_ids=(created + 1,),
            server=f"dir:{self.root}",
        )
        tmp = image.with_suffix(".partial")
        tmp.write_bytes(result.model_dump_json().encode())
        os.replace(tmp, image)
        _append(self.root / "created.log", request.key)
        if self.die_at and created + 1 == self.die_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    def calls(self) -> list[str]:
        return _lines(self.root / "calls.log")

    def created(self) -> list[str]:
        return _lines(self.root / "created.log")


def _append(path: Path, line: str) -> None:
    with open(path, "a") as f:  # no fsync: SIGKILL does not lose the page cache
        f.write(line + "\n")


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []
