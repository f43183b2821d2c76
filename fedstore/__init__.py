"""fedstore: a federated multi-region feature store; every part of the product under one namespace.

The source tree keeps each part in its own top-level folder, so the layout reads as the
architecture (``regions/``, ``serving/``, ``aggregator/``, ``federation/``, ``proto/``,
``feature_repo/``); ``fedstore/<part>`` links to it, and the wheel installs it here. Import the
parts as ``fedstore.regions``, ``fedstore.serving``, …: nothing is installed under a top-level name
another package may own (``proto`` is proto-plus's).

- ``fedstore.cli``: the composition root (the ``fedstore`` command, the demo); the only part that
  imports every other.
"""
