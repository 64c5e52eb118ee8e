"""``python -m vaecodec`` runs the command line."""

from .cli import main

main()
