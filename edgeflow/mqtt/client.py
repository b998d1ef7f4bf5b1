"""Broker settings shared by the source, the sink and the CLI, and the paho client built from them.

>>> cfg = BrokerConfig.model_validate("mqtts://broker.local")
>>> cfg.host, cfg.port, cfg.tls
('broker.local', 8883, True)
>>> BrokerConfig.model_validate("127.0.0.1:1884").address
'127.0.0.1:1884'
>>> cfg = BrokerConfig.model_validate("mqtts://edge:p@ss@broker.local:8884")  # the password ends at the last '@'
>>> cfg.username, cfg.password.get_secret_value(), cfg.address
('edge', 'p@ss', 'broker.local:8884')
>>> cfg
BrokerConfig(host='broker.local', port=8884, username='edge', password=SecretStr('**********'), tls=True, ...)
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import logging
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, SecretStr, model_validator

__all__ = [
    "DEFAULT_BROKER",
    "RECEIVE_MAXIMUM",
    "BrokerConfig",
    "BrokerRejectedError",
    "BrokerUnreachableError",
    "configure_connect",
    "connect_async",
    "describe_connect_error",
    "describe_refusal",
    "make_client",
    "probe_broker",
    "start_hint",
    "unique_suffix",
]

DEFAULT_BROKER = "127.0.0.1:1883"
RECEIVE_MAXIMUM = 65_535
"""MQTT v5 Receive Maximum a source asks for when it acknowledges late: QoS 1 messages the broker may send
before the first acknowledgement (the broker's ``max_inflight_messages``, 20 by default, applies otherwise)."""

_log = logging.getLogger("edgeflow.mqtt")
_READ_SIZE = 65_536
"""Bytes the client asks the socket for at once (paho asks per packet field)."""
_warned_plaintext: set[str] = set()  # addresses already warned about, so each is named once per process
_warned_lock = threading.Lock()


class BrokerUnreachableError(ConnectionError):
    """No MQTT broker answers at the configured address."""


class BrokerRejectedError(ConnectionError):
    """A broker answers but the connection cannot be made: a TLS certificate check failed."""


def _parse_address(text: str) -> dict[str, Any]:
    """``[scheme://][user[:password]@]host[:port]``; the credentials end at the *last* ``@``."""
    tls = False
    rest = text.strip()
    for scheme, secure in (("mqtt://", False), ("tcp://", False), ("mqtts://", True), ("ssl://", True)):
        if rest.startswith(scheme):
            rest, tls = rest[len(scheme) :], secure
            break
    credentials, at, rest = rest.rpartition("@")
    host, sep, port = rest.rpartition(":")
    if not sep:
        host, port = rest, ""
    host = host.strip("[]")
    if not host:
        shown = f"{credentials.partition(':')[0]}:***@{rest}" if at else text  # never echo a password
        msg = f"broker {shown!r}: expected [user[:password]@]host[:port], e.g. 127.0.0.1:1883"
        raise ValueError(msg)
    out: dict[str, Any] = {"host": host, "tls": tls}
    if at:
        user, colon, password = credentials.partition(":")
        out["username"] = user
        if colon:
            out["password"] = password
    if port:
        out["port"] = port
    elif tls:
        out["port"] = 8883
    return out


class BrokerConfig(BaseModel):
    """Where and how to connect: address, credentials, TLS files, keepalive and reconnect backoff.

    Accepts a ``"host:port"`` string (``mqtts://`` turns TLS on) or a mapping.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)  # inputs may hold a password

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65_535)
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    ca_certs: Path | None = None
    """CA bundle to trust (PEM); default: the system's."""
    certfile: Path | None = None
    """Client certificate (PEM) for mutual TLS."""
    keyfile: Path | None = None
    tls_insecure: bool = False
    """Skip the server hostname check (test brokers only)."""
    keepalive_s: int = Field(default=30, ge=5, le=65_535)
    reconnect_min_s: PositiveFloat = 0.2
    reconnect_max_s: PositiveFloat = 30.0
    """Reconnect backoff doubles from ``reconnect_min_s`` up to this cap."""
    protocol: Literal["5", "3.1.1"] = "5"

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        if isinstance(data, str):
            return _parse_address(data)
        return data

    @model_validator(mode="after")
    def _consistent(self) -> BrokerConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            msg = f"reconnect_max_s={self.reconnect_max_s} is below reconnect_min_s={self.reconnect_min_s}"
            raise ValueError(msg)
        files = [p for p in (self.ca_certs, self.certfile, self.keyfile) if p is not None]
        if files and not self.tls:
            msg = "certificate files are set but tls is off; use mqtts://host:port or tls=True"
            raise ValueError(msg)
        for path in files:
            if not path.is_file():
                msg = f"TLS file {str(path)!r} does not exist (looked from {Path.cwd()})"
                raise ValueError(msg)
        if (self.keyfile is None) != (self.certfile is None) and self.keyfile is not None:
            msg = "keyfile needs certfile"
            raise ValueError(msg)
        if self.password is not None and self.username is None:
            msg = "password without username"
            raise ValueError(msg)
        return self

    @property
    def address(self) -> str:
        """``host:port``."""
        return f"{self.host}:{self.port}"


def start_hint(address: str) -> str:
    """How to get a broker running at *address*.

    >>> "apt-get install mosquitto" in start_hint("127.0.0.1:1883")
    True
    """
    port = address.rpartition(":")[2] or "1883"
    return (
        f"start one with `mosquitto -p {port}` (Debian/Ubuntu: `sudo apt-get install mosquitto`; "
        f"Docker: `docker run -p {port}:1883 eclipse-mosquitto:2 mosquitto -c /mosquitto-no-auth.conf`), "
        "or point the flow at another broker"
    )


def probe_broker(cfg: BrokerConfig, timeout_s: float = 3.0) -> None:
    """Open and close a TCP connection to the broker (with ``tls``, also the TLS handshake and certificate checks).

    Raise :class:`BrokerUnreachableError` if none answers, :class:`BrokerRejectedError` if a certificate check
    fails (saying which).
    """
    try:
        sock = socket.create_connection((cfg.host, cfg.port), timeout=timeout_s)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        msg = f"no MQTT broker reachable at {cfg.address} ({reason})"
        raise BrokerUnreachableError(msg) from None
    with sock:
        if not cfg.tls:
            return
        try:
            with _tls_context(cfg).wrap_socket(sock, server_hostname=cfg.host):
                pass
        except (ssl.SSLError, OSError) as exc:
            msg = f"the TLS connection to {cfg.address} failed: {describe_connect_error(exc, cfg)}"
            raise BrokerRejectedError(msg) from None


def _tls_context(cfg: BrokerConfig) -> ssl.SSLContext:
    """Build the TLS settings paho uses for *cfg* (CA bundle, client certificate, hostname check)."""
    context = ssl.create_default_context(cafile=str(cfg.ca_certs) if cfg.ca_certs else None)
    if cfg.certfile is not None:
        context.load_cert_chain(str(cfg.certfile), str(cfg.keyfile) if cfg.keyfile else None)
    if cfg.tls_insecure:
        context.check_hostname = False
    return context


_VERIFY_CODES = {
    9: "the broker's certificate is not valid yet (check the clocks)",
    10: "the broker's certificate has expired",
    18: "the broker's certificate is self-signed: an unknown CA (put it in ca_certs to trust it)",
    19: "the broker's certificate is signed by an unknown CA (not in ca_certs or the system's store)",
    20: "the broker's certificate is signed by an unknown CA (not in ca_certs or the system's store)",
    21: "the broker's certificate is signed by an unknown CA (not in ca_certs or the system's store)",
    62: "the broker's certificate does not name the host {host!r} (hostname mismatch)",
}
_TLS_ALERTS = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the broker requires a client certificate (set certfile and keyfile)",
    "TLSV1_ALERT_UNKNOWN_CA": "the broker does not trust our client certificate (unknown CA)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the broker refused our client certificate",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the broker says our client certificate has expired",
    "WRONG_VERSION_NUMBER": "the broker does not speak TLS on this port (plain MQTT? use host:port without mqtts://)",
}


def describe_connect_error(exc: BaseException, cfg: BrokerConfig) -> str:
    """Say why a connection attempt failed, naming the failed certificate check for TLS errors.

    >>> describe_connect_error(ConnectionRefusedError(111, "Connection refused"), BrokerConfig())
    'connection refused (no broker listening at 127.0.0.1:1883)'
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        known = _VERIFY_CODES.get(exc.verify_code)
        if known is None and "hostname mismatch" in str(exc.verify_message).lower():
            known = _VERIFY_CODES[62]
        detail = known.format(host=cfg.host) if known else "certificate check failed"
        return f"TLS: {detail} ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        reason = str(exc.reason or "")
        detail = _TLS_ALERTS.get(reason, f"TLS handshake failed ({reason or exc})")
        return f"TLS: {detail}"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused (no broker listening at {cfg.address})"
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"no answer from {cfg.address} (timed out)"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


def describe_refusal(reason_code: Any) -> str:
    """Say why a broker's CONNACK refused the client, with a hint for refused credentials.

    >>> describe_refusal("Bad user name or password")
    'the broker refused the login: Bad user name or password (check username and password)'
    """
    text = str(reason_code)
    if any(word in text.lower() for word in ("password", "authori", "identifier")):
        return f"the broker refused the login: {text} (check username and password)"
    return f"the broker refused the connection: {text}"


def _is_loopback(host: str) -> bool:
    if host.lower() in {"localhost", "localhost.localdomain", "ip6-localhost"}:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _warn_plaintext(cfg: BrokerConfig) -> None:
    """Warn once per address when a password would cross the network in clear text."""
    if cfg.password is None or cfg.tls or _is_loopback(cfg.host):
        return
    with _warned_lock:
        if cfg.address in _warned_plaintext:
            return
        _warned_plaintext.add(cfg.address)
    _log.warning(
        "the MQTT password for %s is sent without TLS: anyone on the network path can read it. "
        "Hint: use mqtts://%s (tls=True) or a broker on this host",
        cfg.address,
        cfg.host,
    )


@functools.cache
def _client_class() -> type:
    """Return paho's client class, remembering why its last connection attempt failed (``last_error``)."""
    from paho.mqtt.client import Client

    class EdgeflowClient(Client):  # type: ignore[misc]
        """paho's client reading the socket in large pieces.

        paho reads each packet with three or more ``recv`` calls (the command byte, each length byte, the rest)
        and one ``select`` per packet, and writes each packet with its own ``send`` (after waking its own thread
        through a socket pair, even for a PUBACK it queues itself); here one ``recv`` of up to 64 KiB feeds many
        packets, ``loop_read`` handles every packet already read before paho selects again, a packet paho's thread
        queues wakes nobody, and ``loop_write`` joins queued packets into one ``send`` (:func:`_coalesce`). Socket,
        TLS and protocol are paho's.
        """

        last_error: BaseException | None = None
        on_message_parts: Callable[[str, bytes, dict[str, str] | None, bool, int, int], None] | None = None
        """Set: QoS 0/1 PUBLISH packets that carry at most user properties go to it as ``(topic, payload,
        user properties, dup, qos, mid)``, read straight from the packet (no ``MQTTMessage``, no paho
        ``Properties``, no callback matching); others still go to ``on_message``."""
        _quiet = False  # queue packets without waking paho's thread (ack_many wakes it once)
        _rbuf: bytes = b""
        _rpos: int = 0
        _rsock: Any = None

        def reconnect(self) -> Any:
            try:
                return super().reconnect()
            except Exception as exc:
                self.last_error = exc
                raise

        def _sock_recv(self, bufsize: int) -> bytes:
            if self._rsock is not self._sock:  # a new connection: bytes of the old one are void
                self._rbuf, self._rpos, self._rsock = b"", 0, self._sock
            pos = self._rpos
            if pos >= len(self._rbuf):
                data = super()._sock_recv(_READ_SIZE)
                if len(data) <= bufsize:  # also b"": the connection was closed
                    return data
                self._rbuf, pos = data, 0
            end = pos + bufsize
            self._rpos = end
            return self._rbuf[pos:end]

        def loop_read(self, max_packets: int = 1) -> Any:
            rc = super().loop_read(max_packets)
            while not rc and self._sock is not None and self._rsock is self._sock and self._rpos < len(self._rbuf):
                rc = super().loop_read(1)
            return rc

        def _handle_publish(self) -> Any:
            handler = self.on_message_parts
            parts = _publish_parts(self._in_packet["command"], self._in_packet["packet"], self._protocol == 5)
            if handler is None or parts is None:  # QoS 2, other properties, a topic not UTF-8...: paho's way
                return super()._handle_publish()
            topic, payload, props, dup, qos, mid = parts
            handler(topic, payload, props, dup, qos, mid)
            if qos == 1 and not self._manual_ack:
                return self._send_puback(mid)
            return 0

        def ack_many(self, mids: Iterable[int]) -> int:
            """Acknowledge the QoS 1 messages *mids* (manual acknowledgements) and wake paho's thread once.

            Return how many were acknowledged.
            """
            n = 0
            self._quiet = True
            try:
                for mid in mids:
                    self.ack(mid, 1)
                    n += 1
            finally:
                self._quiet = False
            if n:
                self._wake()
            return n

        def _wake(self) -> None:
            """Make paho's network thread write what is queued (what ``_packet_queue`` does after each packet)."""
            pair = self._sockpairW
            if pair is not None:
                with contextlib.suppress(BlockingIOError):
                    pair.send(b"0")
            if self._thread is None and self._on_socket_register_write is None and self._sock is not None:
                self.loop_write()

        def _packet_queue(self, command: int, packet: bytes | bytearray, mid: int, qos: int, info: Any = None) -> Any:
            if not self._quiet and (self._thread is None or threading.current_thread() is not self._thread):
                return super()._packet_queue(command, packet, mid, qos, info)
            # queued by paho's own network thread (a PUBACK while reading): its loop writes it next, so the
            # wake-up byte paho sends itself through a socket pair for every packet is not needed
            self._out_packet.append(
                {
                    "command": command,
                    "mid": mid,
                    "qos": qos,
                    "pos": 0,
                    "to_process": len(packet),
                    "packet": packet,
                    "info": info,
                }
            )
            return 0

        def loop_write(self) -> Any:
            if len(self._out_packet) > 1:
                _coalesce(self._out_packet)
            return super().loop_write()

    return EdgeflowClient


def _publish_parts(
    header: int, packet: bytes | bytearray, v5: bool
) -> tuple[str, bytes, dict[str, str] | None, bool, int, int] | None:
    r"""Read a PUBLISH packet's topic, payload, user properties, DUP flag, QoS and packet id.

    ``None`` for what paho should handle itself: QoS 2, a property other than user properties, text that is
    not UTF-8, a malformed packet.

    >>> _publish_parts(0x32, b"\x00\x03a/b\x00\x07\x00hi", True)
    ('a/b', b'hi', None, False, 1, 7)
    >>> _publish_parts(0x3A, b"\x00\x01t\x00\x01\x0a\x26\x00\x03seq\x00\x0212x", True)
    ('t', b'x', {'seq': '12'}, True, 1, 1)
    """
    qos = (header & 0x06) >> 1
    if qos == 2:
        return None
    try:
        size = (packet[0] << 8) | packet[1]
        pos = 2 + size
        topic = bytes(packet[2:pos]).decode("utf-8")
        mid = 0
        if qos:
            mid = (packet[pos] << 8) | packet[pos + 1]
            pos += 2
        props = None
        if v5:
            length = shift = 0
            while True:  # variable byte integer
                byte = packet[pos]
                pos += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            end = pos + length
            if length:
                props = {}
                while pos < end:
                    if packet[pos] != 0x26:  # anything but a user property: paho reads it
                        return None
                    klen = (packet[pos + 1] << 8) | packet[pos + 2]
                    key = bytes(packet[pos + 3 : pos + 3 + klen]).decode("utf-8")
                    pos += 3 + klen
                    vlen = (packet[pos] << 8) | packet[pos + 1]
                    props[key] = bytes(packet[pos + 2 : pos + 2 + vlen]).decode("utf-8")
                    pos += 2 + vlen
                if pos != end:
                    return None
        if pos > len(packet) or not topic:
            return None
    except (IndexError, UnicodeDecodeError):
        return None
    return topic, bytes(packet[pos:]), props, bool(header & 0x08), qos, mid


def _coalesce(out: Any, limit: int = 1024) -> None:
    """Join the packets at the head of paho's output queue *out* into one, so they go out in one ``send``.

    Only whole packets that need nothing after being written are joined: QoS 1 publishes (done at their
    PUBACK), acknowledgements, subscriptions; a QoS 0 publish (done once written), a DISCONNECT or a packet
    partly written stop the run.
    """
    from paho.mqtt.client import DISCONNECT, PUBACK, PUBLISH

    taken: list[Any] = []
    while out and len(taken) < limit:
        packet = out[0]
        command = packet["command"] & 0xF0
        if packet["pos"] or command == DISCONNECT or (command == PUBLISH and packet["qos"] == 0):
            break
        taken.append(out.popleft())
    if len(taken) < 2:
        out.extendleft(taken)
        return
    joined = b"".join([packet["packet"] for packet in taken])
    out.appendleft(
        {"command": PUBACK, "mid": 0, "qos": 1, "pos": 0, "to_process": len(joined), "packet": joined, "info": None}
    )


def make_client(cfg: BrokerConfig, client_id: str, *, clean_session: bool = True) -> Any:
    """Build a paho-mqtt 2.x client (callback API v2) with credentials, TLS and reconnect backoff set; not connected.

    Its ``last_error`` holds why the last connection attempt failed (see :func:`describe_connect_error`).
    A password sent without TLS to another host is warned about (once per address).
    """
    from paho.mqtt.client import CallbackAPIVersion
    from paho.mqtt.enums import MQTTProtocolVersion

    Client = _client_class()
    _warn_plaintext(cfg)
    if cfg.protocol == "5":
        client = Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
    else:
        client = Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=MQTTProtocolVersion.MQTTv311,
        )
    if cfg.username is not None:
        client.username_pw_set(cfg.username, cfg.password.get_secret_value() if cfg.password else None)
    if cfg.tls:
        client.tls_set(
            ca_certs=str(cfg.ca_certs) if cfg.ca_certs else None,
            certfile=str(cfg.certfile) if cfg.certfile else None,
            keyfile=str(cfg.keyfile) if cfg.keyfile else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
        if cfg.tls_insecure:
            client.tls_insecure_set(True)
    client.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)  # type: ignore[arg-type]
    return client


def connect_async(
    client: Any,
    cfg: BrokerConfig,
    *,
    clean_session: bool = True,
    session_expiry_s: int = 0,
    receive_maximum: int | None = None,
) -> None:
    """Start connecting in paho's network thread; it retries with the capped backoff until closed."""
    configure_connect(
        client, cfg, clean_session=clean_session, session_expiry_s=session_expiry_s, receive_maximum=receive_maximum
    )
    client.loop_start()


def configure_connect(
    client: Any,
    cfg: BrokerConfig,
    *,
    clean_session: bool = True,
    session_expiry_s: int = 0,
    receive_maximum: int | None = None,
) -> None:
    """Store where and how to connect; ``client.reconnect()`` (or paho's network thread) connects.

    *receive_maximum* (MQTT v5) lets the broker send that many QoS 1 messages before the first acknowledgement.
    """
    if cfg.protocol == "5":
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)
        if not clean_session:
            props.SessionExpiryInterval = session_expiry_s
        if receive_maximum is not None:
            props.ReceiveMaximum = receive_maximum
        client.connect_async(cfg.host, cfg.port, cfg.keepalive_s, clean_start=clean_session, properties=props)
    else:
        client.connect_async(cfg.host, cfg.port, cfg.keepalive_s)


def unique_suffix() -> str:
    """Return a short random suffix for client ids that need not survive a restart.

    >>> len(unique_suffix())
    8
    """
    return os.urandom(4).hex()
