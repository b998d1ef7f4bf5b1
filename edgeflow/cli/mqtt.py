"""``edgeflow record`` and ``edgeflow publish``: live MQTT to a replayable recording, and a recording to MQTT.

Registered on the main ``edgeflow`` command by :mod:`edgeflow.cli`. paho and the MQTT
client module are imported when one of these commands runs, not when ``edgeflow`` starts.

>>> app = typer.Typer()
>>> register(app)
>>> [command.name for command in app.registered_commands]
['record', 'publish']
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal, cast, get_args

import typer

from edgeflow.terminal import EXIT_FAILED, EXIT_USAGE, err

__all__ = ["register"]


def _default_broker() -> str:
    from edgeflow.mqtt.client import DEFAULT_BROKER

    return DEFAULT_BROKER


def _start_hint(broker: str) -> str:
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
    topic: Annotated[list[str], typer.Option("--topic", "-t", help="Subscription filter; repeatable")],
    broker: Broker,
    template: Annotated[
        str | None,
        typer.Option("--template", help="Topic template giving the sensor, e.g. plant/{line}/{sensor}/accel"),
    ] = None,
    key: Annotated[str | None, typer.Option("--key", help="Sensor key over the template's levels")] = None,
    channels: Annotated[str, typer.Option("--channels", "-c", help="Comma-separated channel names")] = "value",
    codec: Codec = "json",
    rate_hz: Annotated[float | None, typer.Option("--rate-hz", help="Sample rate for f32 payloads")] = None,
    duration: Annotated[float | None, typer.Option("--duration", "-d", help="Stop after this many seconds")] = None,
    count: Annotated[int | None, typer.Option("--count", "-n", help="Stop after this many samples")] = None,
    qos: Annotated[int, typer.Option("--qos", min=0, max=1)] = 1,
) -> None:
    """Capture live MQTT samples into a JSONL recording that `eo.replay` plays back."""
    from edgeflow.mqtt.player import record

    codec_name = _check_codec(codec)
    if duration is None and count is None:
        err.print("recording until Ctrl-C (give --duration or --count to stop by itself)")
    try:
        report = record(
            broker,
            topic,
            out,
            template=template,
            key=key,
            codec=codec_name,
            channels=tuple(c.strip() for c in channels.split(",") if c.strip()),
            rate_hz=rate_hz,
            duration_s=duration,
            count=count,
            qos=qos,
            dead_letters=sys.stderr,
            on_ready=lambda: err.print(f"subscribed to {', '.join(topic)} at {broker}; recording to {out}"),
        )
    except (ConnectionError, OSError) as exc:
        err.print(f"[red]cannot record[/red]: {exc}. Hint: {_start_hint(broker)}")
        raise typer.Exit(EXIT_FAILED) from None
    except ValueError as exc:
        err.print(f"[red]bad option[/red]: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    err.print(
        f"recorded {report.samples:,} samples from {report.messages:,} messages in {report.seconds:.1f} s "
        f"to {out} ({report.bad_messages} undecodable)"
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
) -> None:
    """Play a recording to MQTT at a fixed rate, at real or accelerated pace, or as fast as possible."""
    from edgeflow.mqtt.player import publish_recording

    codec_name = _check_codec(codec)
    if rate is not None and speed is not None:
        err.print("[red]bad option[/red]: give --rate or --speed, not both")
        raise typer.Exit(EXIT_USAGE)
    if not recording.is_file():
        err.print(f"[red]no such recording[/red]: {recording}")
        raise typer.Exit(EXIT_USAGE)
    try:
        report = publish_recording(
            recording,
            broker,
            template=topic_template,
            codec=codec_name,
            rate=rate,
            speed=speed,
            batch=batch,
            qos=qos,
            rate_hz=rate_hz,
            eos_topic=eos_topic,
            limit=limit,
        )
    except (ConnectionError, OSError) as exc:
        err.print(f"[red]cannot publish[/red]: {exc}. Hint: {_start_hint(broker)}")
        raise typer.Exit(EXIT_FAILED) from None
    except ValueError as exc:
        err.print(f"[red]bad option[/red]: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    err.print(
        f"published {report.samples:,} samples in {report.messages:,} messages in {report.seconds:.2f} s "
        f"({report.samples_per_s:,.0f}/s){'' if report.acked else ' — NOT all acknowledged'}"
    )
    if not report.acked:
        raise typer.Exit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    """Add ``record`` and ``publish`` to the ``edgeflow`` command."""
    app.command("record")(record_command)
    app.command("publish")(publish_command)
