"""Composition root: the ``fedstore`` command and the demo. The only package that imports every part."""

from fedstore.cli.entry import main

__all__ = ["main"]
