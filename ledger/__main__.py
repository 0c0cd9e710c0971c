"""``python -m ledger``: the same as ``ledgerctl``."""

from .cli import run

run()
