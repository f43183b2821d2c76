"""Composition root: the CLI and the demo. The only package that imports every part."""
