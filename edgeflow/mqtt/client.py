"""Broker settings shared by the source, the sink and the CLI, and the paho client built from them.

>>> cfg = BrokerConfig.model_validate("mqtts://broker.local")
>>> cfg.host, cfg.port, cfg.tls
('broker.local', 8883, True)
>>> BrokerConfig.model_validate("127.0.0.1:1884").address
'127.0.0.1:1884'
"""

from __future__ import annotations

import os
import socket
import ssl
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, SecretStr, model_validator

__all__ = [
    "DEFAULT_BROKER",
    "BrokerConfig",
    "BrokerUnreachableError",
    "configure_connect",
    "connect_async",
    "make_client",
    "probe_broker",
    "start_hint",
    "unique_suffix",
]

DEFAULT_BROKER = "127.0.0.1:1883"


class BrokerUnreachableError(ConnectionError):
    """No MQTT broker answers at the configured address."""


def _parse_address(text: str) -> dict[str, Any]:
    tls = False
    rest = text.strip()
    for scheme, secure in (("mqtt://", False), ("tcp://", False), ("mqtts://", True), ("ssl://", True)):
        if rest.startswith(scheme):
            rest, tls = rest[len(scheme) :], secure
            break
    host, sep, port = rest.rpartition(":")
    if not sep:
        host, port = rest, ""
    host = host.strip("[]")
    if not host:
        msg = f"broker {text!r}: expected host[:port], e.g. 127.0.0.1:1883"
        raise ValueError(msg)
    out: dict[str, Any] = {"host": host, "tls": tls}
    if port:
        out["port"] = port
    elif tls:
        out["port"] = 8883
    return out


class BrokerConfig(BaseModel):
    """Where and how to connect: address, credentials, TLS files, keepalive and reconnect backoff.

    Accepts a ``"host:port"`` string (``mqtts://`` turns TLS on) or a mapping.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

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
    """Open and close a TCP connection to the broker; raise :class:`BrokerUnreachableError` if none answers."""
    try:
        with socket.create_connection((cfg.host, cfg.port), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        msg = f"no MQTT broker reachable at {cfg.address} ({reason})"
        raise BrokerUnreachableError(msg) from None


def make_client(cfg: BrokerConfig, client_id: str, *, clean_session: bool = True) -> Any:
    """Build a paho-mqtt 2.x client (callback API v2) with credentials, TLS and reconnect backoff set; not connected."""
    from paho.mqtt.client import CallbackAPIVersion, Client
    from paho.mqtt.enums import MQTTProtocolVersion

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


def connect_async(client: Any, cfg: BrokerConfig, *, clean_session: bool = True, session_expiry_s: int = 0) -> None:
    """Start connecting in paho's network thread; it retries with the capped backoff until closed."""
    configure_connect(client, cfg, clean_session=clean_session, session_expiry_s=session_expiry_s)
    client.loop_start()


def configure_connect(client: Any, cfg: BrokerConfig, *, clean_session: bool = True, session_expiry_s: int = 0) -> None:
    """Store where and how to connect; ``client.reconnect()`` (or paho's network thread) connects."""
    if cfg.protocol == "5":
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)
        if not clean_session:
            props.SessionExpiryInterval = session_expiry_s
        client.connect_async(cfg.host, cfg.port, cfg.keepalive_s, clean_start=clean_session, properties=props)
    else:
        client.connect_async(cfg.host, cfg.port, cfg.keepalive_s)


def unique_suffix() -> str:
    """Return a short random suffix for client ids that need not survive a restart.

    >>> len(unique_suffix())
    8
    """
    return os.urandom(4).hex()
