"""``python -m edgeflow`` runs the CLI."""

from edgeflow.cli import main

main()
