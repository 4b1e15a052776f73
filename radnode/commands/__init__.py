"""CLI commands that compose several stages (``radnode analyze`` runs the
series selection, an analyzer and the writers on a folder).

Like :mod:`radnode.cli` and :mod:`radnode.composition`, this package is a
composition root: it may import any stage, and no stage imports it.
"""
