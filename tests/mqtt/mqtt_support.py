"""Helpers for the MQTT tests: a real Mosquitto on a free loopback port, flows in threads, a collector."""

from __future__ import annotations

import getpass
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edgeflow.metrics import FlowStats  # noqa: E402
from edgeflow.mqtt.client import BrokerConfig, connect_async, make_client, unique_suffix  # noqa: E402

RECORDING = ROOT / "examples" / "data" / "pump_vibration.csv"
INSTALL_HINT = "mosquitto is not installed: run `sudo apt-get install -y mosquitto mosquitto-clients` (.ci/run does)"


def _password_hash(password: str) -> str:
    """A mosquitto 2 password-file hash (PBKDF2-SHA512, as mosquitto_passwd writes it)."""
    import base64
    import hashlib
    import os

    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
    return f"$7$101${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """One mosquitto process; can be killed and restarted on the same port with its persistence file.

    *users* (name -> password) makes it check logins; *tls* (``cafile``, ``certfile``, ``keyfile`` paths) makes its
    listener TLS-only; *settings* override mosquitto.conf options (e.g. ``{"max_queued_messages": "100"}``).
    *autosave* is how many changes make it save its database (with *persistence*; 1 = after every change).
    """

    def __init__(
        self,
        folder: Path,
        persistence: bool = False,
        anonymous: bool = True,
        *,
        users: dict[str, str] | None = None,
        tls: dict[str, Path] | None = None,
        settings: dict[str, str] | None = None,
        autosave: int = 1,
    ) -> None:
        self.binary = shutil.which("mosquitto") or next(
            (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).is_file()), None
        )
        if self.binary is None:
            pytest.fail(INSTALL_HINT)
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.persistence = persistence
        self.anonymous = anonymous
        self.users = users
        self.tls = tls
        self.settings = settings or {}
        self.autosave = autosave
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _config(self) -> Path:
        conf = self.folder / "mosquitto.conf"
        options = {"max_queued_messages": "1000000", "max_inflight_messages": "1000", **self.settings}
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'true' if self.anonymous and not self.users else 'false'}",
            *(f"{name} {value}" for name, value in options.items()),
            f"log_dest file {self.folder / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "connection_messages true",
            f"user {getpass.getuser()}",  # started as root, mosquitto would switch to a user that cannot write the log
        ]
        if self.persistence:
            lines += [
                "persistence true",
                f"persistence_location {self.folder}/",
                "autosave_on_changes true",
                f"autosave_interval {self.autosave}",
            ]
        if self.users:
            passwords = self.folder / "passwords"
            passwords.write_text("".join(f"{user}:{_password_hash(pw)}\n" for user, pw in self.users.items()))
            lines.append(f"password_file {passwords}")
        if self.tls:
            lines += [f"{name} {path}" for name, path in self.tls.items()]
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self) -> None:
        for _attempt in range(5):
            if not self.port:
                self.port = _free_port()
            assert self.binary is not None
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self._config())], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                        return
                except OSError:
                    time.sleep(0.02)
            self.stop()
            self.port = 0 if not self.persistence else self.port
        log = self.log()[-2000:]
        pytest.fail(f"mosquitto did not start on 127.0.0.1 (see {self.folder / 'mosquitto.log'}):\n{log}")

    def log(self) -> str:
        """What mosquitto logged so far (errors, warnings, notices and connection messages)."""
        path = self.folder / "mosquitto.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    def probes(self) -> int:
        """TCP connections closed without an MQTT CONNECT (broker probes; start() makes one)."""
        return self.log().count("Client <unknown> closed its connection.")

    def kill(self) -> None:
        """SIGKILL: the broker dies without a goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=5)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None


class Collector:
    """A paho subscriber that keeps every message (topic, payload) in arrival order."""

    def __init__(
        self,
        address: str,
        topic: str,
        *,
        client_id: str | None = None,
        clean: bool = True,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        login = {"username": username, "password": password} if username else {}
        base = BrokerConfig.model_validate(address).model_dump()
        cfg = BrokerConfig.model_validate({**base, "reconnect_min_s": 0.05, "reconnect_max_s": 0.2, **login})
        self.client = make_client(cfg, client_id or f"collector-{unique_suffix()}", clean_session=clean)
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        connect_async(self.client, cfg, clean_session=clean, session_expiry_s=600)
        assert self._subscribed.wait(5), f"could not subscribe to {topic} at {address}"

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload)))

    def wait_for(self, n: int, timeout: float = 10.0) -> list[tuple[str, bytes]]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class FlowThread:
    """Runs a flow (or compiled flow) with edgeflow.runtime.run in a thread; join() returns its report or re-raises.

    ``stats`` is the run's live FlowStats, handed over by run's progress callback.
    """

    def __init__(self, flow: Any) -> None:
        from edgeflow.runtime import run

        self.report: Any = None
        self.error: BaseException | None = None
        self.stats: FlowStats | None = None

        def seen(stats: FlowStats) -> None:
            self.stats = stats

        def go() -> None:
            try:
                self.report = run(flow, progress=seen, progress_every_s=0.01)
            except BaseException as exc:  # handed to join()
                self.error = exc

        self.thread = threading.Thread(target=go, name=f"flow-{flow.name}", daemon=True)
        self.thread.start()

    def count(self, name: str) -> int:
        """An operator counter of the running flow (0 before the run has started)."""
        return 0 if self.stats is None else self.stats.counts.get(name, 0)

    @property
    def samples_in(self) -> int:
        return 0 if self.stats is None else self.stats.samples_in

    def join(self, timeout: float = 30.0) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"flow did not end within {timeout} s"
        if self.error is not None:
            raise self.error
        return self.report
