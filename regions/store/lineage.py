"""OpenLineage run events for materialisation jobs (start, complete, fail).

Inputs are the region's source files, outputs the online store and the batch snapshot. Events go
to a local file by default (one JSON event per line in ``<data dir>/lineage/events.jsonl``), the
OpenLineage file transport; an operator points ``openlineage-python`` elsewhere with its own
standard environment configuration if they run a lineage server.

COMPLETE and FAIL events carry a ``dataContract`` run facet: the contract's mode (strict or quarantine) and,
in quarantine mode, per view how many rows were set aside and where.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import attr
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import RunFacet, error_message_run
from openlineage.client.transport.file import FileConfig, FileTransport

PRODUCER = "https://github.com/fedstore/fedstore/regions/store"


@dataclass(frozen=True)
class ContractFacetData:
    """What a job's data contract did: its mode, and per view the rows set aside and their file."""

    mode: str  # "strict" or "quarantine"
    views: dict[str, dict[str, int | str | None]] = field(default_factory=dict)


@attr.define
class DataContractRunFacet(RunFacet):
    """A custom run facet (OpenLineage's naming: a producer-specific facet under its own key)."""

    mode: str
    views: dict[str, dict[str, int | str | None]]

    @staticmethod
    def _get_schema() -> str:
        return f"{PRODUCER}/DataContractRunFacet.json"


class LineageEmitter:
    def __init__(self, data_dir: Path, region: str) -> None:
        self.path = data_dir / "lineage" / "events.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        transport = FileTransport(FileConfig(log_file_path=str(self.path), append=True))
        self._client = OpenLineageClient(transport=transport)
        self.namespace = f"fedstore://{region.lower()}"
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
        inputs: list[str],
        outputs: list[str],
        error: str | None = None,
        contract: ContractFacetData | None = None,
    ) -> None:
        facets: dict[str, RunFacet] = {}
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
            job=Job(namespace=self.namespace, name=job_name),
            producer=PRODUCER,
            inputs=[InputDataset(namespace=self.namespace, name=n) for n in inputs],
            outputs=[OutputDataset(namespace=self.namespace, name=n) for n in outputs],
        )
        self._client.emit(event)
