"""OpenLineage run events for materialisation jobs (start, complete, fail).

Where events go: always to the region's own file (one JSON event per line in
``<data dir>/lineage/events.jsonl``, OpenLineage's file transport: the region's record, read by
nothing outside it); and, when the environment configures OpenLineage the standard way
(``OPENLINEAGE_URL``, ``OPENLINEAGE__TRANSPORT__*``, or ``OPENLINEAGE_CONFIG`` naming an
``openlineage.yml``), also wherever that says, through the client's own configuration. A lineage
server that is down or refuses an event costs a warning, never the job: the file still has it.

Datasets are named by OpenLineage's naming spec, so they join what other producers emit: a source
or snapshot file is namespace ``file``, name its absolute path; the online store, which the spec
does not name, ``redis://host:port`` (name ``<db>/<project>.<view>``) or ``sqlite://<file>`` (name
``<project>_<view>``, Feast's table). Each dataset carries the ``schema`` and ``dataSource``
facets, outputs a ``outputStatistics`` row count once known; the run ``nominalTime`` (the job's
window) and ``processing_engine``; the job ``jobType``.

COMPLETE and FAIL events carry a ``dataContract`` run facet: the contract's mode (strict or
quarantine) and, in quarantine mode, per view how many rows were set aside and where.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit

import attr
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    DatasetFacet,
    RunFacet,
    datasource_dataset,
    error_message_run,
    job_type_job,
    nominal_time_run,
    output_statistics_output_dataset,
    processing_engine_run,
    schema_dataset,
)
from openlineage.client.transport.file import FileConfig, FileTransport

from fedstore.federation import OnlineStoreConfig

PRODUCER = "https://github.com/fedstore/fedstore/regions/store"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContractFacetData:
    """What a job's data contract did: its mode, and per view the rows set aside and their file."""

    mode: str  # "strict" or "quarantine"
    views: dict[str, dict[str, int | str | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class LineageDataset:
    """A dataset as the naming spec names it, with its columns and, once known, its row count."""

    namespace: str
    name: str
    fields: tuple[tuple[str, str], ...] = ()  # (column, type)
    rows: int | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def file_dataset(path: Path, fields: tuple[tuple[str, str], ...] = ()) -> LineageDataset:
    return LineageDataset("file", str(path.resolve()), fields)


def online_dataset(online_store: OnlineStoreConfig, project: str, view: str,
                   fields: tuple[tuple[str, str], ...] = ()) -> LineageDataset:
    """The online store's copy of a view: Redis by its address and database, SQLite by its file."""
    if online_store.type == "sqlite" and online_store.path is not None:
        return LineageDataset(f"sqlite://{online_store.path.resolve()}", f"{project}_{view}", fields)
    if online_store.type == "redis_cluster" and online_store.nodes:
        host, port = online_store.nodes[0]
        return LineageDataset(f"redis://{host}:{port}", f"{project}.{view}", fields)
    parts = urlsplit(online_store.url or "")
    db = parts.path.strip("/") or "0"
    return LineageDataset(f"redis://{parts.hostname or '127.0.0.1'}:{parts.port or 6379}", f"{db}/{project}.{view}",
                          fields)


@attr.define
class DataContractRunFacet(RunFacet):
    """A custom run facet (OpenLineage's naming: a producer-specific facet under its own key)."""

    mode: str
    views: dict[str, dict[str, int | str | None]]

    @staticmethod
    def _get_schema() -> str:
        return f"{PRODUCER}/DataContractRunFacet.json"


def configured_elsewhere(environ: os._Environ[str] | dict[str, str] = os.environ) -> bool:
    """Whether the environment points OpenLineage somewhere, the client's standard way."""
    return bool(environ.get("OPENLINEAGE_URL") or environ.get("OPENLINEAGE_CONFIG")
                or any(k.startswith("OPENLINEAGE__TRANSPORT") for k in environ))


def _version() -> str:
    try:
        return metadata.version("fedstore")
    except metadata.PackageNotFoundError:
        return "unknown"


class LineageEmitter:
    def __init__(self, data_dir: Path, region: str) -> None:
        self.path = data_dir / "lineage" / "events.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clients = [OpenLineageClient(transport=FileTransport(FileConfig(log_file_path=str(self.path), append=True)))]
        if configured_elsewhere():
            self._clients.append(OpenLineageClient())  # its standard configuration: env vars or openlineage.yml
        self.namespace = f"fedstore://{region.lower()}"  # the jobs' namespace
        self.region = region

    def run_id(self, job_id: str) -> str:
        # stable per job id, so start/complete/fail events of one job share a run
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.namespace}/{job_id}"))

    def emit(
        self,
        state: RunState,
        *,
        job_id: str,
        job_name: str,
        inputs: list[LineageDataset],
        outputs: list[LineageDataset],
        window: tuple[datetime, datetime] | None = None,
        error: str | None = None,
        contract: ContractFacetData | None = None,
    ) -> None:
        facets: dict[str, RunFacet] = {
            "processing_engine": processing_engine_run.ProcessingEngineRunFacet(
                version=_version(), name="fedstore", openlineageAdapterVersion=metadata.version("openlineage-python")),
        }
        if window is not None:
            facets["nominalTime"] = nominal_time_run.NominalTimeRunFacet(
                nominalStartTime=window[0].isoformat(), nominalEndTime=window[1].isoformat())
        if contract is not None:
            facets["dataContract"] = DataContractRunFacet(mode=contract.mode, views=contract.views)
        if error:
            facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
                message=error, programmingLanguage="python"
            )
        event = RunEvent(
            eventType=state,
            eventTime=datetime.now(timezone.utc).isoformat(),
            run=Run(runId=self.run_id(job_id), facets=facets),
            job=Job(namespace=self.namespace, name=job_name, facets={"jobType": job_type_job.JobTypeJobFacet(
                processingType="BATCH", integration="FEDSTORE", jobType=job_name.upper())}),
            producer=PRODUCER,
            inputs=[InputDataset(namespace=d.namespace, name=d.name, facets=_dataset_facets(d)) for d in inputs],
            outputs=[OutputDataset(namespace=d.namespace, name=d.name, facets=_dataset_facets(d),
                                   outputFacets={"outputStatistics": output_statistics_output_dataset
                                                 .OutputStatisticsOutputDatasetFacet(rowCount=d.rows)}
                                   if d.rows is not None else {})
                     for d in outputs],
        )
        for i, client in enumerate(self._clients):
            try:
                client.emit(event)
            except Exception as e:  # noqa: BLE001 -- a lineage server never fails the job
                if i == 0:
                    raise  # the region's own file: a disk problem the operator must see
                log.warning("region %s: the lineage server did not take the %s event of job %s (%s); it is in %s",
                            self.region, state.value, job_id, e, self.path)


def _dataset_facets(d: LineageDataset) -> dict[str, DatasetFacet]:
    facets: dict[str, DatasetFacet] = {
        "dataSource": datasource_dataset.DatasourceDatasetFacet(name=d.namespace, uri=d.namespace),
    }
    if d.fields:
        facets["schema"] = schema_dataset.SchemaDatasetFacet(
            fields=[schema_dataset.SchemaDatasetFacetFields(name=n, type=t) for n, t in d.fields])
    return facets
