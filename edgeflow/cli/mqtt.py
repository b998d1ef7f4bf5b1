"""``edgeflow record`` and ``edgeflow publish``: live MQTT to a replayable recording, and a recording to MQTT.

Registered on the main ``edgeflow`` command by :mod:`edgeflow.cli`. paho and the MQTT
client module are imported when one of these commands runs, not when ``edgeflow`` starts.
Both take the broker settings the flows take: ``--broker [user[:password]@]host:port``
(``mqtts://`` for TLS), ``--username``, ``--password`` (or ``$EDGEFLOW_MQTT_PASSWORD``),
``--ca-certs``, ``--certfile``, ``--keyfile``, ``--tls-insecure``, ``--protocol``; no
password is ever printed.

>>> app = typer.Typer()
>>> register(app)
>>> [command.name for command in app.registered_commands]
['record', 'publish']
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast, get_args

import typer

from edgeflow.terminal import EXIT_FAILED, EXIT_USAGE, err

if TYPE_CHECKING:
    from edgeflow.mqtt.client import BrokerConfig

__all__ = ["register"]


def _default_broker() -> str:
    from edgeflow.mqtt.client import DEFAULT_BROKER

    return DEFAULT_BROKER


def _start_hint(broker: str, problem: object = "") -> str:
    """Say how to get a broker running at *broker*, or, for a TLS problem, what to check."""
    if "TLS" in str(problem):
        return "check --ca-certs (the CA that signed the broker's certificate), the host name and the certificate dates"
    from edgeflow.mqtt.client import start_hint

    return start_hint(broker)


Broker = Annotated[
    str,
    typer.Option(
        "--broker",
        "-b",
        default_factory=_default_broker,
        show_default=False,
        help="host:port, default 127.0.0.1:1883 (mqtts://host:port for TLS)",
    ),
]
Codec = Annotated[str, typer.Option("--codec", help="json, csv or f32")]
Username = Annotated[str | None, typer.Option("--username", "-u", help="MQTT user name")]
Password = Annotated[
    str | None,
    typer.Option("--password", envvar="EDGEFLOW_MQTT_PASSWORD", show_envvar=True, help="MQTT password (never shown)"),
]
Tls = Annotated[bool, typer.Option("--tls", help="Use TLS (implied by mqtts:// or a certificate file)")]
CaCerts = Annotated[Path | None, typer.Option("--ca-certs", help="CA bundle (PEM) to check the broker against")]
CertFile = Annotated[Path | None, typer.Option("--certfile", help="Client certificate (PEM) for mutual TLS")]
KeyFile = Annotated[Path | None, typer.Option("--keyfile", help="Client key (PEM) for mutual TLS")]
TlsInsecure = Annotated[
    bool, typer.Option("--tls-insecure", help="Skip the broker host name check (test brokers only)")
]
Protocol = Annotated[str, typer.Option("--protocol", help="MQTT protocol: 5 or 3.1.1")]


def _broker_config(
    broker: str,
    *,
    username: str | None,
    password: str | None,
    tls: bool,
    ca_certs: Path | None,
    certfile: Path | None,
    keyfile: Path | None,
    tls_insecure: bool,
    protocol: str,
) -> BrokerConfig:
    """Build the broker settings from the options, or exit 2 saying what is wrong (never echoing a password).

    >>> cfg = _broker_config("edge:p@ss@127.0.0.1:1884", username=None, password=None, tls=False, ca_certs=None,
    ...     certfile=None, keyfile=None, tls_insecure=False, protocol="5")
    >>> cfg.username, cfg.address
    ('edge', '127.0.0.1:1884')
    """
    from pydantic import ValidationError

    from edgeflow.mqtt.client import BrokerConfig

    try:
        base: dict[str, Any] = BrokerConfig.model_validate(broker).model_dump(exclude_unset=True)
        extra = {
            "username": username,
            "password": password,
            "ca_certs": ca_certs,
            "certfile": certfile,
            "keyfile": keyfile,
        }
        base.update({k: v for k, v in extra.items() if v is not None})
        if tls or ca_certs is not None or certfile is not None:
            base["tls"] = True
        if tls_insecure:
            base["tls_insecure"] = True
        base["protocol"] = protocol
        return BrokerConfig.model_validate(base)
    except ValidationError as exc:
        problems = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        err.print(f"[red]bad broker settings[/red]: {problems}", markup=True)
        raise typer.Exit(EXIT_USAGE) from None


CodecName = Literal["json", "csv", "f32"]


def _check_codec(codec: str) -> CodecName:
    """Return *codec* as a codec name, or exit 2 naming the ones there are.

    >>> _check_codec("f32")
    'f32'
    """
    if codec not in get_args(CodecName):
        err.print(f"[red]unknown codec[/red] {codec!r}: expected json, csv or f32")
        raise typer.Exit(EXIT_USAGE)
    return cast(CodecName, codec)


def record_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL file to write (replay format)")],
    broker: Broker,
    topic: Annotated[
        list[str] | None,
        typer.Option("--topic", "-t", help="Subscription filter; repeatable (default: the template's)"),
    ] = None,
    template: Annotated[
        str | None,
        typer.Option(
            "--template",
            help="Topic template giving the sensor (default with no --topic: plant/{line}/{sensor}/accel, "
            "where `edgeflow publish` sends by default)",
        ),
    ] = None,
    key: Annotated[str | None, typer.Option("--key", help="Sensor key over the template's levels")] = None,
    channels: Annotated[
        str | None,
        typer.Option(
            "--channels", "-c", help="Comma-separated channel names (default: the first JSON sample's keys, else value)"
        ),
    ] = None,
    codec: Codec = "json",
    rate_hz: Annotated[float | None, typer.Option("--rate-hz", help="Sample rate for f32 payloads")] = None,
    duration: Annotated[float | None, typer.Option("--duration", "-d", help="Stop after this many seconds")] = None,
    count: Annotated[int | None, typer.Option("--count", "-n", help="Stop after this many samples")] = None,
    qos: Annotated[int, typer.Option("--qos", min=0, max=1)] = 1,
    username: Username = None,
    password: Password = None,
    tls: Tls = False,
    ca_certs: CaCerts = None,
    certfile: CertFile = None,
    keyfile: KeyFile = None,
    tls_insecure: TlsInsecure = False,
    protocol: Protocol = "5",
) -> None:
    """Capture live MQTT samples into a JSONL recording that `eo.replay` plays back."""
    from edgeflow.mqtt.player import record

    codec_name = _check_codec(codec)
    cfg = _broker_config(
        broker,
        username=username,
        password=password,
        tls=tls,
        ca_certs=ca_certs,
        certfile=certfile,
        keyfile=keyfile,
        tls_insecure=tls_insecure,
        protocol=protocol,
    )
    if duration is None and count is None:
        err.print("recording until Ctrl-C (give --duration or --count to stop by itself)")
    names = None if channels is None else tuple(c.strip() for c in channels.split(",") if c.strip())
    try:
        report = record(
            cfg,
            topic or (),
            out,
            template=template,
            key=key,
            codec=codec_name,
            channels=names,
            rate_hz=rate_hz,
            duration_s=duration,
            count=count,
            qos=qos,
            dead_letters=sys.stderr,
            on_ready=lambda: err.print(f"subscribed at {cfg.address}; recording to {out}", markup=False),
        )
    except (ConnectionError, OSError) as exc:
        err.print(f"cannot record: {exc}. Hint: {_start_hint(cfg.address, exc)}", markup=False, style="red")
        raise typer.Exit(EXIT_FAILED) from None
    except ValueError as exc:
        err.print(f"[red]bad option[/red]: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    lost = f", {report.lost:,} lost upstream (sequence gaps)" if report.lost else ""
    err.print(
        f"recorded {report.samples:,} samples ({', '.join(report.channels) or '-'}) from {report.messages:,} "
        f"messages in {report.seconds:.1f} s to {out} ({report.bad_messages} undecodable{lost})",
        markup=False,
    )


def publish_command(
    recording: Annotated[Path, typer.Argument(help="CSV or JSONL recording (ts, sensor, value columns)")],
    broker: Broker,
    topic_template: Annotated[
        str, typer.Option("--topic-template", "-t", help="Topic per sensor, e.g. plant/line1/{sensor}/accel")
    ] = "plant/line1/{sensor}/accel",
    rate: Annotated[float | None, typer.Option("--rate", help="Samples per second (all sensors)")] = None,
    speed: Annotated[float | None, typer.Option("--speed", help="Times real time, from the timestamps")] = None,
    codec: Codec = "json",
    batch: Annotated[int, typer.Option("--batch", min=1, help="Samples of one sensor per message")] = 1,
    rate_hz: Annotated[float | None, typer.Option("--rate-hz", help="Sample rate written with f32 payloads")] = None,
    qos: Annotated[int, typer.Option("--qos", min=0, max=1)] = 1,
    eos_topic: Annotated[
        str | None, typer.Option("--eos-topic", help="Publish an end-of-stream marker here at the end")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Publish at most this many samples")] = None,
    stamp: Annotated[
        bool,
        typer.Option("--stamp/--no-stamp", help="Number each message per topic (user properties seq, pub)"),
    ] = True,
    username: Username = None,
    password: Password = None,
    tls: Tls = False,
    ca_certs: CaCerts = None,
    certfile: CertFile = None,
    keyfile: KeyFile = None,
    tls_insecure: TlsInsecure = False,
    protocol: Protocol = "5",
) -> None:
    """Play a recording to MQTT at a fixed rate, at real or accelerated pace, or as fast as possible.

    Every message is stamped with a per-topic sequence number (MQTT v5 user properties `seq` and `pub`) so
    that a flow counts what the broker lost (`mqtt.lost_upstream`); after a broker restart the publisher
    reconnects and resumes.
    """
    from edgeflow.mqtt.player import publish_recording

    codec_name = _check_codec(codec)
    cfg = _broker_config(
        broker,
        username=username,
        password=password,
        tls=tls,
        ca_certs=ca_certs,
        certfile=certfile,
        keyfile=keyfile,
        tls_insecure=tls_insecure,
        protocol=protocol,
    )
    if rate is not None and speed is not None:
        err.print("[red]bad option[/red]: give --rate or --speed, not both")
        raise typer.Exit(EXIT_USAGE)
    if not recording.is_file():
        err.print(f"[red]no such recording[/red]: {recording}")
        raise typer.Exit(EXIT_USAGE)
    try:
        report = publish_recording(
            recording,
            cfg,
            template=topic_template,
            codec=codec_name,
            rate=rate,
            speed=speed,
            batch=batch,
            qos=qos,
            rate_hz=rate_hz,
            eos_topic=eos_topic,
            limit=limit,
            stamp=stamp,
        )
    except (ConnectionError, OSError) as exc:
        err.print(f"cannot publish: {exc}. Hint: {_start_hint(cfg.address, exc)}", markup=False, style="red")
        raise typer.Exit(EXIT_FAILED) from None
    except ValueError as exc:
        err.print(f"[red]bad option[/red]: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    again = f", reconnected {report.reconnects}x" if report.reconnects else ""
    err.print(
        f"published {report.samples:,} samples in {report.messages:,} messages in {report.seconds:.2f} s "
        f"({report.samples_per_s:,.0f}/s{again}){'' if report.acked else ' — NOT all acknowledged'}",
        markup=False,
    )
    if not report.acked:
        raise typer.Exit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    """Add ``record`` and ``publish`` to the ``edgeflow`` command."""
    app.command("record")(record_command)
    app.command("publish")(publish_command)
