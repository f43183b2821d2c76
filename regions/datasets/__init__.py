"""Point-in-time-correct training datasets built inside a region, with their manifests."""

from fedstore.regions.datasets.builder import TrainingSetRequest, build_training_set
from fedstore.regions.datasets.manifest import DatasetManifest, Listed, list_manifests

__all__ = ["DatasetManifest", "Listed", "TrainingSetRequest", "build_training_set", "list_manifests"]
