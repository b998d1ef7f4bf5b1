"""``python -m edgeflow`` runs the ``edgeflow`` command."""

from edgeflow.cli import main

if __name__ == "__main__":
    main()
