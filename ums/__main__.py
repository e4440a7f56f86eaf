"""``python -m ums`` runs the ``ums`` command."""

from ums.cli import app

app(prog_name="ums")
