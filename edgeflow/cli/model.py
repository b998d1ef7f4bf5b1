"""The ``edgeflow model`` commands: build a project's models and inspect a model file.

``edgeflow model build`` runs the project's pipeline script (``models/build.py``
by default: it trains, prunes, quantizes and writes the manifest; it needs the
training extra, ``pip install 'edgeflow[train]'``). ``edgeflow model info PATH``
shows a manifest's or a ``.tflite`` file's tensors, quantization, sizes and
metrics using only the runtime.

>>> import typer
>>> app = typer.Typer()
>>> register(app)
>>> [group.name for group in app.registered_groups]
['model']
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Annotated

import typer

from edgeflow.model import LiteRTModelHandler, ModelLoadError
from edgeflow.terminal import err

__all__ = ["register"]


def _run_script(script: Path, out: Path | None) -> int:
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
        return int(module.main([str(out)] if out is not None else []) or 0)
    except ImportError as exc:
        err.print(f"[red]cannot build[/red]: {exc}")
        return 1
    except RuntimeError as exc:
        err.print(f"[red]build failed[/red]: {exc}")
        return 1
    finally:
        sys.modules.pop(spec.name, None)


def _info(path: Path, variant: str | None) -> int:
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
    group = typer.Typer(no_args_is_help=True, help="Build and inspect models for eo.infer.")

    @group.command("build")
    def build(
        out: Annotated[Path | None, typer.Argument(help="Folder for the models (default: the script's choice)")] = None,
        script: Annotated[Path, typer.Option("--script", "-s", help="The pipeline script")] = Path("models/build.py"),
    ) -> None:
        """Train, prune and quantize the project's models (runs SCRIPT's main(); needs edgeflow[train])."""
        raise typer.Exit(_run_script(script, out))

    @group.command("info")
    def info(
        path: Annotated[Path, typer.Argument(help="A model manifest.json or .tflite file")],
        variant: Annotated[str | None, typer.Option("--variant", "-v", help="Manifest variant, e.g. float32")] = None,
    ) -> None:
        """Show a model's tensors, quantization, sizes and metrics (runtime only)."""
        raise typer.Exit(_info(path, variant))

    app.add_typer(group, name="model")
