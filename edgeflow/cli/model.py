"""The ``edgeflow model`` commands: build, inspect, sign, verify and deploy models.

``edgeflow model build`` runs the project's pipeline script (``models/build.py``
by default: it trains, prunes, quantizes, writes the manifest and signs it; it needs
the training extra, ``pip install 'edgeflow[train]'``). ``edgeflow model info PATH``
shows a manifest's or a ``.tflite`` file's tensors, quantization, sizes and
metrics using only the runtime.

Signing and updates (docs/ota.md): ``keygen`` makes an Ed25519 key pair, ``sign``
signs a model folder's manifest, ``verify`` checks one as a gateway would;
``deploy`` installs a verified version into a gateway's model store for the running
flow to shadow and promote, ``rollback`` asks it to leave a version, ``status``
shows what it runs and what happened, and ``agent`` takes updates over MQTT.

``edgeflow fleet rollout / status / rollback`` is the control plane beside the broker
(:mod:`edgeflow.ota.fleet`).

>>> import typer
>>> app = typer.Typer()
>>> register(app)
>>> register_fleet(app)
>>> [group.name for group in app.registered_groups]
['model', 'fleet']
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any

import typer

from edgeflow.terminal import EXIT_FAILED, EXIT_INVALID, EXIT_USAGE, err

__all__ = ["parse_expiry", "register", "register_fleet"]


def _run_script(script: Path, out: Path | None, key: Path | None = None) -> int:
    if not script.is_file():
        err.print(f"[red]no model pipeline[/red] at {script} (looked from {Path.cwd()}); pass --script")
        return 4
    for folder in (str(Path.cwd()), str(script.resolve().parent)):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(f"_edgeflow_model_build_{script.stem}", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # registered while it runs, as an import would: dataclasses (and pickle) look their module up by name
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        if not hasattr(module, "main"):
            err.print(f"[red]{script}[/red] has no main(argv) function")
            return 4
        argv = ([str(out)] if out is not None else []) + (["--key", str(key)] if key is not None else [])
        return int(module.main(argv) or 0)
    except ImportError as exc:
        err.print(f"[red]cannot build[/red]: {exc}")
        return 1
    except RuntimeError as exc:
        err.print(f"[red]build failed[/red]: {exc}")
        return 1
    finally:
        sys.modules.pop(spec.name, None)


def _trusted_keys_default() -> Path:
    return Path(os.environ.get("EDGEFLOW_TRUSTED_KEYS") or "models/keys")


BrokerOption = Annotated[str, typer.Option("--broker", "-b", help="host:port (mqtts:// for TLS)")]
TrustedOption = Annotated[
    Path | None,
    typer.Option(
        "--trusted-keys", "-k", help="Folder of trusted *.pub keys (default: $EDGEFLOW_TRUSTED_KEYS or models/keys)"
    ),
]


def parse_expiry(text: str | None, now: datetime | None = None) -> datetime | None:
    """``30d``, ``12h``, ``90m`` from now, or an ISO 8601 time with a timezone; ``None`` for none.

    >>> base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> parse_expiry("30d", base).isoformat(), parse_expiry("2026-02-01T00:00:00+00:00").day
    ('2026-01-31T00:00:00+00:00', 1)
    """
    if not text:
        return None
    match = re.fullmatch(r"(\d+)([dhm])", text.strip())
    if match:
        unit = {"d": "days", "h": "hours", "m": "minutes"}[match.group(2)]
        return (now or datetime.now(timezone.utc)) + timedelta(**{unit: int(match.group(1))})
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        msg = f"--expires {text!r} has no timezone; add one (e.g. +00:00) or give a duration like 30d"
        raise ValueError(msg)
    return moment


def _keygen(name: str, out: Path) -> int:
    from edgeflow.model.signing import key_id, load_public_key, write_keypair

    try:
        private, public = write_keypair(out, name)
    except (FileExistsError, OSError) as exc:
        err.print(f"[red]cannot make the key pair[/red]: {exc}", markup=True)
        return EXIT_FAILED
    typer.echo(f"private key {private} (mode 0600): keep it where you sign releases, never on a gateway")
    typer.echo(f"public key  {public} (key id {key_id(load_public_key(public))}): copy it into every gateway's "
               "trusted keys folder")  # fmt: skip
    return 0


def _sign(path: Path, key: Path, expires: str | None, update_hashes: bool) -> int:
    from edgeflow.model import ModelLoadError
    from edgeflow.model.verify import sign_model

    try:
        until = parse_expiry(expires)
        signed = sign_model(path, key, expires=until, update_hashes=update_hashes)
    except ValueError as exc:
        err.print(f"[red]bad --expires[/red]: {exc}")
        return EXIT_USAGE
    except ModelLoadError as exc:
        err.print(f"[red]cannot sign[/red] {path}: {exc}", markup=False)
        return EXIT_INVALID
    signer = signed.signer
    assert signer is not None
    typer.echo(f"signed {signed.model_id} ({signed.path}) with {signer.key_name} ({signer.key_id})"
               f"{f', expires {signer.expires}' if signer.expires else ''}")  # fmt: skip
    typer.echo(f"  content digest {signed.digest}")
    for name, digest in signed.files.items():
        typer.echo(f"  {name}  sha256 {digest}")
    return 0


def _verify(path: Path, trusted_keys: Path | None) -> int:
    from edgeflow.model import LiteRTModelHandler, ModelLoadError
    from edgeflow.model.signing import TrustedKeys
    from edgeflow.model.verify import verify_model

    try:
        trusted = TrustedKeys.load(trusted_keys or _trusted_keys_default())
        checked = verify_model(path, trusted)
        info = LiteRTModelHandler(checked.path, trusted_keys=trusted).load_model()
    except (ModelLoadError, ImportError) as exc:
        err.print("[red]refused[/red]: ", end="")
        err.print(str(exc), markup=False)
        return EXIT_INVALID
    signer = checked.signer
    assert signer is not None
    typer.echo(f"ok {checked.model_id}: signed by {signer.key_name} ({signer.key_id}) at {signer.signed_at}"
               f"{f', expires {signer.expires}' if signer.expires else ''}; {len(checked.files)} files match; "
               f"{info.model_id} loads and runs")  # fmt: skip
    if signer.test_key:
        err.print(
            f"[yellow]warning[/yellow]: {signer.key_name} is a TEST key whose private half is in the repository; "
            "sign real releases with your own key (edgeflow model keygen)"
        )
    return 0


def _deploy(path: Path, store_dir: Path, trusted_keys: Path | None, wait_s: float) -> int:
    from edgeflow.model import ModelLoadError
    from edgeflow.model.signing import TrustedKeys
    from edgeflow.ota.store import ModelStore

    store = ModelStore(store_dir)
    try:
        trusted = TrustedKeys.load(trusted_keys or _trusted_keys_default())
        installed = store.install(path, trusted)
    except (ModelLoadError, OSError) as exc:
        err.print("[red]refused[/red]: ", end="")
        err.print(str(exc), markup=False)
        return EXIT_INVALID
    offset = store.events()[1]
    seq = store.offer(installed, origin="deploy")
    typer.echo(f"installed {installed.model_id} into {installed.path.parent}; request #{seq}: the flow using "
               f"store={str(store_dir)!r} shadows it, then promotes or rejects it")  # fmt: skip
    return _follow(store, seq, offset, wait_s)


def _follow(store: object, seq: int, offset: int, wait_s: float) -> int:
    from edgeflow.ota.store import ModelStore

    assert isinstance(store, ModelStore)
    if wait_s <= 0:
        return 0
    deadline = time.monotonic() + wait_s
    final = {"healthy": 0, "rejected": 1, "rolled_back": 1, "withdrawn": 0}
    while time.monotonic() < deadline:
        events, offset = store.events(offset)
        for event in events:
            if event.get("seq") != seq:
                continue
            typer.echo(f"{event['at']}  {event['event']:<12} {event.get('model') or ''}  {event.get('reason') or ''}")
            if event["event"] == "promoted" and not event.get("health_windows"):
                return 0  # no health watch follows
            code = final.get(str(event["event"]))
            if code is not None:
                return code
        time.sleep(0.1)
    err.print(f"[yellow]no final outcome within {wait_s:g} s[/yellow]; `edgeflow model status --store ...` shows more")
    return EXIT_FAILED


def _status(store_dir: Path, last: int) -> int:
    from edgeflow.ota.store import ModelStore

    store = ModelStore(store_dir)
    state = store.state()
    if not state:
        typer.echo(f"store {store_dir}: no flow has recorded a state yet")
    for key in ("active", "last_good"):
        entry = state.get(key)
        if entry:
            typer.echo(f"{key:<10} {entry['model']}  ({entry['path']})")
    if state:
        typer.echo(f"phase      {state.get('phase')}   requests handled up to #{state.get('seq', 0)}")
    for digest, why in state.get("rejected", {}).items():
        typer.echo(f"refused    {digest[:16]}  {why}")
    inbox = store.inbox()
    if inbox:
        typer.echo(f"inbox      #{inbox['seq']} {inbox['kind']} {inbox.get('model') or inbox.get('version')}")
    for event in store.events()[0][-last:]:
        fields = {k: v for k, v in event.items() if k in ("model", "reason", "active")}
        typer.echo(f"{event['at']}  {event['event']:<12} {json.dumps(fields)}")
    return 0


def _agent(store: Path, gateway: str, group: str | None, broker: str, trusted_keys: Path | None, prefix: str) -> int:
    import signal
    import threading

    from pydantic import ValidationError

    from edgeflow.model.signing import SignatureError
    from edgeflow.ota.agent import AgentSettings, GatewayAgent

    try:
        settings = AgentSettings(gateway=gateway, group=group, store=store, broker=broker,  # type: ignore[arg-type]
                                 trusted_keys=trusted_keys or _trusted_keys_default(), prefix=prefix)  # fmt: skip
        agent = GatewayAgent(settings)
    except (ValidationError, SignatureError) as exc:
        err.print("[red]cannot start the agent[/red]: ", end="")
        err.print(" ".join(str(exc).split()), markup=False)
        return EXIT_USAGE
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    agent.start()
    err.print(f"agent {gateway} ({group or 'no group'}): store {store}, broker {settings.broker.address}, "
              f"control topics under {prefix}/")  # fmt: skip
    shown = 0
    try:
        while not stop.wait(0.05):
            agent.step()
            for record in agent.published[shown:]:
                reason = f"  {record['reason']}" if record.get("reason") else ""
                err.print(f"{record['at']}  {record['state']:<12} {record.get('version') or ''}{reason}", markup=False)
            shown = len(agent.published)
    finally:
        agent.stop()
    return 0


def _fleet_rollout(folder: Path, broker: str, key: Path, plan_args: dict[str, Any], expect: int | None) -> int:
    from pydantic import ValidationError

    from edgeflow.model import ModelLoadError
    from edgeflow.ota.fleet import RolloutController, RolloutPlan

    try:
        plan = RolloutPlan(**plan_args)
    except ValidationError as exc:
        err.print(f"[red]bad rollout plan[/red]: {exc.errors()[0]['msg']}")
        return EXIT_USAGE
    try:
        controller = RolloutController(broker, key, log=lambda line: err.print(line, markup=False))
    except (ConnectionError, ModelLoadError) as exc:
        err.print(f"[red]cannot start the rollout[/red]: {exc}")
        return EXIT_FAILED
    try:
        fleet = controller.discover(expect=expect)
        err.print(f"fleet: {len(fleet)} gateways reported")
        report = controller.rollout(folder, plan)
    except ModelLoadError as exc:
        err.print("[red]refused[/red]: ", end="")
        err.print(str(exc), markup=False)
        return EXIT_INVALID
    finally:
        controller.close()
    for line in report.lines():
        typer.echo(line)
    return 0 if report.outcome == "complete" else EXIT_FAILED


def _fleet_status(broker: str, wait_s: float) -> int:
    from edgeflow.mqtt.client import BrokerConfig, connect_async, make_client, unique_suffix

    cfg = BrokerConfig.model_validate(broker)
    seen: dict[str, dict[str, object]] = {}
    client = make_client(cfg, f"edgeflow-fleet-status-{unique_suffix()}")
    client.on_connect = lambda c, *_: c.subscribe("edgeflow/ota/gw/+/status", qos=1)

    def on_message(_c: object, _u: object, message: object) -> None:
        try:
            record = json.loads(message.payload)  # type: ignore[attr-defined]
            seen[str(record["gateway"])] = record
        except (ValueError, KeyError, TypeError):
            pass

    client.on_message = on_message
    connect_async(client, cfg)
    time.sleep(wait_s)
    client.disconnect()
    client.loop_stop()
    for name in sorted(seen):
        r = seen[name]
        where = r.get("group") or "-"
        typer.echo(
            f"{name:<16} {where!s:<10} {r.get('state')!s:<12} active {r.get('active') or '-'}  {r.get('reason') or ''}"
        )
    err.print(f"{len(seen)} gateways")
    return 0


def _info(path: Path, variant: str | None) -> int:
    from edgeflow.model import LiteRTModelHandler, ModelLoadError

    try:
        info = LiteRTModelHandler(path, variant=variant).load_model()
    except (ModelLoadError, ImportError) as exc:
        err.print(f"[red]cannot load[/red] {path}: {exc}")
        return 3
    for line in info.lines():
        typer.echo(line)
    manifest = info.manifest
    if manifest is None:
        return 0
    typer.echo(f"  features ({len(manifest.features)}): {', '.join(manifest.features)}")
    typer.echo(f"  preprocess {manifest.preprocess}; output {manifest.output.kind}: {manifest.output.meaning}")
    typer.echo("  variant          bytes  threshold  metrics")
    for key, v in manifest.variants.items():
        shown = ("f1", "precision", "recall", "accuracy")
        metrics = "  ".join(f"{k}={x:g}" for k, x in v.metrics.items() if k in shown)
        threshold = f"{v.threshold:.4g}" if v.threshold is not None else "-"
        typer.echo(f"  {key:<14} {v.bytes:>7,}  {threshold:>9}  {metrics}")
    return 0


def register(app: typer.Typer) -> None:
    """Add the ``model`` command group to the ``edgeflow`` command."""
    group = typer.Typer(no_args_is_help=True, help="Build, inspect, sign, verify and deploy models for eo.infer.")

    @group.command("build")
    def build(
        out: Annotated[Path | None, typer.Argument(help="Folder for the models (default: the script's choice)")] = None,
        script: Annotated[Path, typer.Option("--script", "-s", help="The pipeline script")] = Path("models/build.py"),
        key: Annotated[
            Path | None,
            typer.Option(
                "--key",
                help="Sign what is built with this key (default: $EDGEFLOW_SIGNING_KEY, else the "
                "repository's TEST key)",
            ),
        ] = None,
    ) -> None:
        """Train, prune, quantize and sign the project's models (runs SCRIPT's main(); needs edgeflow[train])."""
        raise typer.Exit(_run_script(script, out, key))

    @group.command("info")
    def info(
        path: Annotated[Path, typer.Argument(help="A model manifest.json or .tflite file")],
        variant: Annotated[str | None, typer.Option("--variant", "-v", help="Manifest variant, e.g. float32")] = None,
    ) -> None:
        """Show a model's tensors, quantization, sizes and metrics (runtime only)."""
        raise typer.Exit(_info(path, variant))

    @group.command("keygen")
    def keygen(
        name: Annotated[str, typer.Argument(help="Key name: NAME.key and NAME.pub are written")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the key files")] = Path("keys"),
    ) -> None:
        """Make an Ed25519 key pair for signing models (the .key stays with whoever releases models)."""
        raise typer.Exit(_keygen(name, out))

    @group.command("sign")
    def sign(
        path: Annotated[Path, typer.Argument(help="A model folder or its manifest.json")],
        key: Annotated[Path, typer.Option("--key", help="The private key (NAME.key)")],
        expires: Annotated[
            str | None, typer.Option("--expires", help="Refuse installs after: 30d, 12h or an ISO 8601 time")
        ] = None,
        update_hashes: Annotated[
            bool, typer.Option("--update-hashes", help="Rewrite the files' sha256 and sizes in the manifest first")
        ] = False,
    ) -> None:
        """Sign a model's manifest (every file's sha256 and every setting) in place."""
        raise typer.Exit(_sign(path, key, expires, update_hashes))

    @group.command("verify")
    def verify(
        path: Annotated[Path, typer.Argument(help="A model folder or its manifest.json")],
        trusted_keys: TrustedOption = None,
    ) -> None:
        """Check a model as a gateway would: signature, expiry, files inside the folder and their hashes, loading."""
        raise typer.Exit(_verify(path, trusted_keys))

    @group.command("deploy")
    def deploy(
        path: Annotated[Path, typer.Argument(help="A signed model folder or its manifest.json")],
        store: Annotated[Path, typer.Option("--store", "-s", help="The gateway's model store folder")],
        trusted_keys: TrustedOption = None,
        wait: Annotated[float, typer.Option("--wait", help="Follow the update for up to this many seconds")] = 0.0,
    ) -> None:
        """Install a verified version into a gateway's model store; the running flow shadows, then promotes it."""
        raise typer.Exit(_deploy(path, store, trusted_keys, wait))

    @group.command("rollback")
    def rollback(
        version: Annotated[str, typer.Argument(help="The version to leave, e.g. 1.1.0")],
        store: Annotated[Path, typer.Option("--store", "-s", help="The gateway's model store folder")],
        reason: Annotated[str, typer.Option("--reason", help="Why (reported with the rollback)")] = "operator request",
    ) -> None:
        """Ask the running flow to leave VERSION for the last good one (or drop it if it is still a candidate)."""
        from edgeflow.ota.store import ModelStore

        seq = ModelStore(store).request_rollback(version, reason, origin="deploy")
        typer.echo(f"rollback of {version} requested (#{seq})")

    @group.command("agent")
    def agent(
        store: Annotated[Path, typer.Option("--store", "-s", help="The gateway's model store folder")],
        gateway: Annotated[str, typer.Option("--gateway", "-g", help="This gateway's id")],
        group_name: Annotated[str | None, typer.Option("--group", help="This gateway's group")] = None,
        broker: Annotated[str, typer.Option("--broker", "-b", help="host:port (mqtts:// for TLS)")] = "127.0.0.1:1883",
        trusted_keys: TrustedOption = None,
        prefix: Annotated[str, typer.Option("--prefix", help="Topic prefix")] = "edgeflow/ota",
    ) -> None:
        """Take signed updates over MQTT into the model store and report their state (runs until Ctrl-C)."""
        raise typer.Exit(_agent(store, gateway, group_name, broker, trusted_keys, prefix))

    @group.command("status")
    def status(
        store: Annotated[Path, typer.Option("--store", "-s", help="The gateway's model store folder")],
        last: Annotated[int, typer.Option("--last", "-n", help="Events to show")] = 10,
    ) -> None:
        """Show what a gateway's flow runs, what it refused, and the latest update events."""
        raise typer.Exit(_status(store, last))

    app.add_typer(group, name="model")


def register_fleet(app: typer.Typer) -> None:
    """Add the ``fleet`` command group (the rollout controller) to the ``edgeflow`` command."""
    group = typer.Typer(no_args_is_help=True, help="Roll signed model versions out to a fleet of gateways over MQTT.")

    @group.command("rollout")
    def rollout(
        folder: Annotated[Path, typer.Argument(help="The signed model folder to roll out")],
        key: Annotated[Path, typer.Option("--key", help="The private key that signed it (signs the commands)")],
        broker: BrokerOption = "127.0.0.1:1883",
        group_name: Annotated[str | None, typer.Option("--group", help="Only gateways of this group")] = None,
        stages: Annotated[str, typer.Option("--stages", help="Cumulative shares, e.g. 0.05,0.25,1")] = "0.05,0.25,1",
        max_failures: Annotated[int, typer.Option("--max-failures", help="Failures per stage before abort")] = 0,
        stage_timeout: Annotated[float, typer.Option("--stage-timeout", help="Seconds a stage may take")] = 600.0,
        expect: Annotated[int | None, typer.Option("--expect", help="Wait until this many gateways reported")] = None,
    ) -> None:
        """Canary, gates on the gateways' reported health, then expansion; abort and roll back on a failed stage."""
        try:
            shares = tuple(float(x) for x in stages.split(","))
        except ValueError:
            err.print(f"[red]bad --stages[/red] {stages!r}: give shares like 0.05,0.25,1")
            raise typer.Exit(EXIT_USAGE) from None
        plan: dict[str, Any] = {
            "stages": shares,
            "group": group_name,
            "max_failures": max_failures,
            "stage_timeout_s": stage_timeout,
        }
        raise typer.Exit(_fleet_rollout(folder, broker, key, plan, expect))

    @group.command("status")
    def status(
        broker: BrokerOption = "127.0.0.1:1883",
        wait: Annotated[float, typer.Option("--wait", help="Seconds to collect the retained reports")] = 1.0,
    ) -> None:
        """List every gateway's latest reported state and active model."""
        raise typer.Exit(_fleet_status(broker, wait))

    @group.command("rollback")
    def rollback(
        version: Annotated[str, typer.Argument(help="The version to leave")],
        key: Annotated[Path, typer.Option("--key", help="A private key the gateways trust")],
        broker: BrokerOption = "127.0.0.1:1883",
        gateway: Annotated[list[str] | None, typer.Option("--gateway", "-g", help="A gateway (repeatable)")] = None,
        group_name: Annotated[str | None, typer.Option("--group", help="A whole group")] = None,
        reason: Annotated[str, typer.Option("--reason", help="Why")] = "operator request",
    ) -> None:
        """Order gateways (or a group) to leave VERSION for their last good one."""
        from edgeflow.mqtt.client import unique_suffix
        from edgeflow.ota.channel import rollback_order
        from edgeflow.ota.fleet import RolloutController

        if not gateway and group_name is None:
            err.print("[red]name --gateway or --group[/red]")
            raise typer.Exit(EXIT_USAGE)
        controller = RolloutController(broker, key)
        try:
            order = rollback_order(f"manual-{unique_suffix()}", version, reason)
            for name in gateway or []:
                controller.send(order, gateway=name)
            if group_name is not None:
                controller.send(order, group=group_name)
        finally:
            controller.close()
        typer.echo(
            f"rollback of {version} sent to {', '.join(gateway or [])}{' group ' + group_name if group_name else ''}"
        )

    app.add_typer(group, name="fleet")
