"""The jurisdiction-tagged model registry: versions with lineage, policy-checked stages, audit."""
