# -*- coding: utf-8 -*-
"""scopeflow file-drop reference macro: a microscope played by a vendor macro through files.

Runs as a ZEISS ZEN OAD macro (IronPython 2.7) and under CPython 3: no f-strings, no pathlib,
only os, json and time. Everything that talks to ZEN is in ``ZenAdapter``; ``DropMacro`` is the
protocol (docs/edge-protocol.md, "File-drop protocol") and is the same code the tests run, with a
simulated microscope behind another adapter (tests/filedrop_driver.py).

In ZEN: set DROP_DIR below to a folder the edge PC also sees, open this file in the Macro
Editor, run it, then start ``scopeflow edge serve --driver file-drop --drop-dir DROP_DIR``.
The ZEN calls in ``ZenAdapter`` follow the ZEN OAD API (Zen.Devices, Zen.Acquisition); check
them against the OAD documentation of your ZEN version: they are the only lines to adapt, and
the same holds for NIS-Elements JOBS or LAS X macros (another adapter, same ``DropMacro``).
"""

import json
import os
import time

PROTOCOL = 1
DROP_DIR = r"C:\scopeflow\drop"


def write_atomic(path, data):
    """Write JSON under a temporary name, then rename: the edge never reads half a file.
    Names are never reused, so the rename never replaces a file (as Windows requires)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        handle.write(json.dumps(data))
        handle.flush()
        if hasattr(os, "fsync"):  # not every IronPython build has it
            os.fsync(handle.fileno())
    os.rename(tmp, path)


def read_json(path):
    with open(path) as handle:
        return json.loads(handle.read())


class DropMacro(object):
    """The macro's side of the protocol: answer each command file, in order, exactly once."""

    def __init__(self, drop_dir, scope, poll_s=0.05):
        self.drop_dir = drop_dir
        self.scope = scope
        self.poll_s = poll_s
        self.commands = os.path.join(drop_dir, "commands")
        self.replies = os.path.join(drop_dir, "replies")
        self.images = os.path.join(drop_dir, "images")
        self.handled = 0

    def start(self):
        """Create the folders and announce the microscope (hello.json)."""
        for folder in (self.commands, self.replies, self.images):
            if not os.path.isdir(folder):
                os.makedirs(folder)
        hello = self.scope.describe()
        x, y, z = self.scope.position()
        objective, channel = self.scope.current()
        hello.update(
            {
                "protocol": PROTOCOL,
                "position": [x, y, z],
                "objective": objective,
                "channel": channel,
            }
        )
        hello_path = os.path.join(self.drop_dir, "hello.json")
        if os.path.exists(hello_path):
            os.remove(hello_path)  # a restarted macro announces itself again
        write_atomic(hello_path, hello)

    def pending(self):
        """Command files without a reply, oldest first; stops before everything else."""
        found = []
        for name in os.listdir(self.commands):
            if not name.endswith(".json"):
                continue  # *.tmp: still being written
            if os.path.exists(os.path.join(self.replies, name)):
                continue  # answered already (also after a restart of this macro)
            found.append(name)
        found.sort()
        stops = [n for n in found if self._op(n) == "stop"]
        return stops + [n for n in found if n not in stops]

    def _op(self, name):
        try:
            return read_json(os.path.join(self.commands, name)).get("op")
        except ValueError:
            return None

    def step(self):
        """Answer every pending command; returns how many were answered."""
        names = self.pending()
        stopping = False
        for name in names:
            command = read_json(os.path.join(self.commands, name))
            if command.get("op") == "stop":
                stopping = True
                reply = self.handle(command)
            elif stopping:  # written before the stop, not yet done: abandoned
                reply = self.reply(command, False, "stopped before it started")
                reply["stopped"] = True
            else:
                reply = self.handle(command)
            write_atomic(os.path.join(self.replies, name), reply)
            self.handled += 1
        return len(names)

    def run(self, keep_going=None):
        """Poll until ``keep_going()`` is false (forever by default)."""
        self.start()
        while keep_going is None or keep_going():
            if not self.step():
                time.sleep(self.poll_s)

    def reply(self, command, ok, error=None):
        x, y, z = self.scope.position()
        objective, channel = self.scope.current()
        return {
            "protocol": PROTOCOL,
            "seq": command.get("seq"),
            "command_id": command.get("command_id"),
            "ok": ok,
            "error": error,
            "x": x,
            "y": y,
            "z": z,
            "objective": objective,
            "channel": channel,
        }

    def handle(self, command):
        """Carry out one command; any failure becomes a reply with ok false and the reason."""
        if command.get("protocol") != PROTOCOL:
            return self.reply(
                command,
                False,
                "this macro speaks file-drop protocol %d, the command %s"
                % (PROTOCOL, command.get("protocol")),
            )
        op = command.get("op")
        try:
            if op == "stop":
                self.scope.abort()
                return self.reply(command, True)
            if op == "move":
                self.scope.move(command.get("x"), command.get("y"), command.get("z"))
                return self.reply(command, True)
            if op == "objective":
                self.scope.set_objective(command["objective"])
                return self.reply(command, True)
            if op == "channel":
                self.scope.set_channel(command["channel"])
                return self.reply(command, True)
            if op == "acquire":
                return self.acquire(command)
            return self.reply(command, False, "unknown op %r" % (op,))
        except Exception as exc:  # the edge reports it as the event's failure
            return self.reply(command, False, "%s: %s" % (type(exc).__name__, exc))

    def acquire(self, command):
        """Go where the command says, take one image, save it, then answer (the sidecar)."""
        self.scope.move(command.get("x"), command.get("y"), command.get("z"))
        objective, channel = self.scope.current()
        if command.get("objective") and command["objective"] != objective:
            self.scope.set_objective(command["objective"])
        if command.get("channel") and command["channel"] != channel:
            self.scope.set_channel(command["channel"])
        relative = "images/%06d.tif" % command["seq"]
        taken = time.time()
        self.scope.acquire(
            command.get("exposure_ms"),
            command.get("intensity"),
            os.path.join(self.drop_dir, "images", "%06d.tif" % command["seq"]),
        )
        reply = self.reply(command, True)
        reply.update({"image": relative, "time": taken, "exposure_ms": command.get("exposure_ms")})
        return reply


class ZenAdapter(object):
    """Every ZEN call of the macro. ``zen`` is ZEN's global ``Zen`` object."""

    def __init__(self, zen, experiments, objectives, stage):
        self.zen = zen
        self.experiments = experiments  # channel name -> ZEN experiment (.czexp) name
        self.objectives = objectives  # name -> {"pixel_size_um": ..}
        self.stage = stage  # {"x": [lo, hi], "y": [lo, hi], "z": [lo, hi]}
        self.channel = sorted(experiments)[0]

    def describe(self):
        camera = self.zen.Devices.Camera
        return {
            "name": "ZEN OAD",
            "camera": {"width": camera.ImageWidth, "height": camera.ImageHeight, "dtype": "uint16"},
            "objectives": self.objectives,
            "channels": sorted(self.experiments),
            "stage": self.stage,
        }

    def position(self):
        stage, focus = self.zen.Devices.Stage, self.zen.Devices.Focus
        return stage.ActualPositionX, stage.ActualPositionY, focus.ActualPosition

    def current(self):
        changer = self.zen.Devices.ObjectiveChanger
        return changer.GetNameByPosition(changer.ActualPosition), self.channel

    def move(self, x, y, z):
        if x is not None and y is not None:
            self.zen.Devices.Stage.MoveTo(x, y)
        if z is not None:
            self.zen.Devices.Focus.MoveTo(z)

    def set_objective(self, name):
        changer = self.zen.Devices.ObjectiveChanger
        changer.TargetPosition = changer.GetPositionByName(name)
        changer.Apply()

    def set_channel(self, name):
        if name not in self.experiments:
            raise ValueError("no ZEN experiment for channel %r" % (name,))
        self.channel = name

    def acquire(self, exposure_ms, intensity, path):
        experiment = self.zen.Acquisition.Experiments.GetByName(self.experiments[self.channel])
        if exposure_ms is not None:
            experiment.SetExposureTime(0, 0, exposure_ms)
        image = self.zen.Acquisition.AcquireImage(experiment)
        self.zen.Application.Save(image, path, False)
        image.Close()

    def abort(self):
        self.zen.Acquisition.StopExperiment()


if __name__ == "__main__" and "Zen" in globals():  # inside ZEN's Macro Editor
    scope = ZenAdapter(
        Zen,  # noqa: F821 - ZEN's global
        experiments={"DAPI": "scopeflow_DAPI.czexp", "GFP": "scopeflow_GFP.czexp"},
        objectives={"10x": {"pixel_size_um": 0.65}, "40x": {"pixel_size_um": 0.1625}},
        stage={"x": [0, 110000], "y": [0, 75000], "z": [0, 10000]},
    )
    DropMacro(DROP_DIR, scope).run()
