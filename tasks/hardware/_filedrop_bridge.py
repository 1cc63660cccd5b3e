"""The edge's side of the file-drop protocol: write a command file, wait for the macro's reply.

Polling, not filesystem notifications: drop folders often live on an SMB share between the
acquisition PC and the edge, where notifications do not arrive; a stat every ``poll_s`` costs
nothing next to an exposure.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from scopeflow import ConfigurationError, HardwareError

from ._command_scope import current_command
from ._filedrop_protocol import (
    DropCommand,
    DropHello,
    DropLayout,
    DropReply,
    read_drop_json,
    write_atomic,
)

__all__ = ["FileDropBridge"]

log = logging.getLogger(__name__)


class FileDropBridge:
    """Sends operations to the macro playing the microscope in ``root`` and waits for answers.

    One operation is in flight at a time (the edge's hardware lock already serialises them);
    ``stop`` is the exception: it is written at once, and the macro reads it out of order.
    """

    def __init__(self, root: Path, *, poll_s: float = 0.01, reply_timeout_s: float = 60.0) -> None:
        self.layout = DropLayout(root).create()
        self.poll_s = poll_s
        self.reply_timeout_s = reply_timeout_s
        self._seq_lock = threading.Lock()
        self._seq = itertools.count(self.layout.last_seq() + 1)

    def wait_hello(self, timeout_s: float) -> DropHello:
        """The macro's ``hello.json``, waiting up to ``timeout_s`` for the macro to start."""
        deadline = time.monotonic() + timeout_s
        while not self.layout.hello.exists():
            if time.monotonic() > deadline:
                raise ConfigurationError(
                    f"no hello.json in the drop folder {self.layout.root} after {timeout_s:g} s: "
                    "start the vendor macro (examples/zen_oad_macro.py) on that folder first, "
                    "or check --drop-dir"
                )
            time.sleep(self.poll_s)
        return read_drop_json(self.layout.hello, DropHello)

    def _next_seq(self) -> int:
        with self._seq_lock:
            return next(self._seq)

    def _command(self, op: str, fields: dict[str, Any]) -> DropCommand:
        scope = current_command()
        return DropCommand(
            seq=self._next_seq(),
            op=op,  # type: ignore[arg-type]
            command_id=scope.command_id if scope else None,
            event=scope.event if scope else None,
            **fields,
        )

    def send(self, op: str, **fields: Any) -> DropReply:
        """Write one operation and wait for its reply; a refusal or silence raises
        `HardwareError` naming the command file and what to check."""
        command = self._command(op, fields)
        path = self.layout.command(command.seq)
        write_atomic(path, command.model_dump(mode="json", exclude_none=True))
        reply_path = self.layout.reply(command.seq)
        deadline = time.monotonic() + self.reply_timeout_s
        while not reply_path.exists():
            if time.monotonic() > deadline:
                raise HardwareError(
                    f"the macro did not answer {path} within {self.reply_timeout_s:g} s: check "
                    f"that the vendor macro is running and polls {self.layout.commands}"
                )
            time.sleep(self.poll_s)
        reply = read_drop_json(reply_path, DropReply)
        if reply.seq != command.seq or reply.command_id != command.command_id:
            raise HardwareError(
                f"{reply_path} answers seq {reply.seq} / command {reply.command_id!r}, not seq "
                f"{command.seq} / command {command.command_id!r}: the macro must copy both from "
                "the command file it answers"
            )
        if not reply.ok:
            what = "stopped" if reply.stopped else "failed"
            raise HardwareError(
                f"the macro {what} {op} (command {command.command_id!r}, {path.name}): "
                f"{reply.error or 'no reason given'}"
            )
        return reply

    def request_stop(self) -> None:
        """Tell the macro to abandon what it is doing; does not wait for the answer."""
        command = self._command("stop", {})
        write_atomic(
            self.layout.command(command.seq), command.model_dump(mode="json", exclude_none=True)
        )

    def read_image(self, reply: DropReply, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
        """The image an ``acquire`` reply names, checked against the camera's shape and type."""
        import tifffile

        if not reply.image:
            raise HardwareError(
                f"reply {reply.seq} to an acquire names no image: the macro must set 'image' "
                "to the image's path relative to the drop folder"
            )
        path = (self.layout.root / reply.image).resolve()
        if self.layout.root.resolve() not in path.parents:
            raise HardwareError(
                f"reply {reply.seq} names {reply.image!r}, outside the drop folder "
                f"{self.layout.root}: write images under images/"
            )
        try:
            pixels = tifffile.imread(path)
            if pixels.size == 0:
                raise ValueError("no pixels in it")
        except Exception as exc:
            raise HardwareError(
                f"cannot read the image {path} of reply {reply.seq}: {exc}; the macro must write "
                "a complete TIFF before its reply"
            ) from exc
        pixels = np.squeeze(pixels)
        if pixels.shape != shape or pixels.dtype != dtype:
            raise HardwareError(
                f"the image {path} is {pixels.shape} {pixels.dtype}, the camera announced in "
                f"hello.json is {shape} {dtype}: save single-plane images of the camera's size"
            )
        return pixels
