"""``fedstore.datasets.v1.HistoricalFeatures``: training sets streamed inside the region.

The request's entity frame is written to a temporary Parquet file in the region, the training set
is built by the same code as `fedstore region training-set` (so it gets a manifest and an entry in
the region's index), and streamed back as Arrow IPC chunks of bounded rows. A refusal is raised
(``federation.errors``; a ``RegionError`` is one) and sent by the node's error boundary.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path
from typing import Iterator

import grpc
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from fedstore.federation import RegionConfig
from fedstore.federation.errors import InvalidArgument, PermissionDenied, reworded
from fedstore.federation.grpc_handlers import Malformed, parser
from fedstore.proto.fedstore.datasets.v1 import datasets_pb2 as pb
from fedstore.proto.fedstore.datasets.v1 import datasets_pb2_grpc
from fedstore.regions.datasets import TrainingSetRequest, build_training_set
from fedstore.regions.datasets.manifest import DatasetManifest
from fedstore.regions.errors import RegionError
from fedstore.regions.store.node import RegionNode

SERVICE = pb.DESCRIPTOR.services_by_name["HistoricalFeatures"].full_name

DEFAULT_CHUNK_ROWS = 65_536
MAX_CHUNK_ROWS = 1_000_000


class HistoricalFeaturesServicer(datasets_pb2_grpc.HistoricalFeaturesServicer):
    def __init__(self, region: RegionConfig) -> None:
        self.region = region
        self.node = RegionNode(region)
        # one training set built at a time: the builds share the node's Feast store, whose DuckDB
        # connection refuses a second query under way ("connection is busy"), and each may take
        # about a GiB; the server's thread pool is sized for hundreds of idle open streams
        self._building = threading.Lock()

    def handler(self) -> grpc.GenericRpcHandler:
        """The generated registration's handler, but with a parser that makes bytes which are not
        a request INVALID_ARGUMENT (grpc's own deserializer failure is UNKNOWN)."""
        method = grpc.unary_stream_rpc_method_handler(
            self.GetHistoricalFeatures,
            request_deserializer=parser(pb.GetHistoricalFeaturesRequest),
            response_serializer=pb.ArrowChunk.SerializeToString,
        )
        return grpc.method_handlers_generic_handler(SERVICE, {"GetHistoricalFeatures": method})

    def GetHistoricalFeatures(
        self, request: pb.GetHistoricalFeaturesRequest | Malformed, context: grpc.ServicerContext
    ) -> Iterator[pb.ArrowChunk]:
        """A generator on one of the server's pool threads. When its caller cancels or lets the
        stream expire, grpc stops asking for chunks and closes the generator, so the thread and
        the scratch files are freed; a build under way cannot be stopped and finishes first."""
        if isinstance(request, Malformed):
            raise request.error()
        if not request.region.strip():  # a request missing a field, not one for another jurisdiction
            raise InvalidArgument(f"region is required: name the region whose data to read ({self.region.code} here)",
                                  reason="REGION_REQUIRED")
        if request.region.upper() != self.region.code:
            raise PermissionDenied(f"this node serves region {self.region.code} only; data of "
                                   f"{request.region or '(no region)'} stays in its own jurisdiction",
                                   reason="OTHER_REGION")
        chunk_rows = request.max_chunk_rows or DEFAULT_CHUNK_ROWS
        if chunk_rows > MAX_CHUNK_ROWS:
            raise InvalidArgument(f"max_chunk_rows may be at most {MAX_CHUNK_ROWS}", reason="CHUNK_ROWS_TOO_LARGE")
        while not self._building.acquire(timeout=0.25):  # queued behind the build under way
            if not context.is_active():
                return  # cancelled, or its deadline passed, while waiting: nothing was built
        work = Path(tempfile.mkdtemp(prefix="request-", dir=self._scratch()))
        try:
            try:
                manifest = self._build(request, work)
            finally:
                self._building.release()
            batches = _batches(work / "dataset.parquet", chunk_rows)
            while (chunk := _chunk(batches, manifest.dataset_id)) is not None:
                yield chunk
        finally:  # the stream ended, failed or was cancelled; a refusal's status is sent after this
            shutil.rmtree(work, ignore_errors=True)

    def _build(self, request: pb.GetHistoricalFeaturesRequest, work: Path) -> DatasetManifest:
        entities = work / "entities.parquet"
        try:
            table = ipc.open_stream(request.entities_arrow).read_all()
        except (pa.ArrowInvalid, OSError):
            raise InvalidArgument("entities_arrow is not an Arrow IPC stream",
                                  reason="INVALID_ENTITIES_ARROW") from None
        pq.write_table(table, entities)
        try:
            return build_training_set(
                self.node,
                TrainingSetRequest(
                    entities=entities,
                    feature_service=request.feature_service,
                    out=work / "dataset.parquet",
                    label=request.label or None,
                    show_progress=False,
                ),
            )
        except RegionError as e:
            # the caller sent entities_arrow, not this node's scratch file: its messages name that
            message = str(e).replace(f"entity file {entities}", "entities_arrow").replace(str(entities), "entities_arrow")
            raise reworded(e, message) from None

    def _scratch(self) -> Path:
        path = self.region.data_dir / "datasets" / "requests"
        path.mkdir(parents=True, exist_ok=True)
        return path


def _batches(dataset: Path, rows: int) -> Iterator[pa.RecordBatch]:
    return pq.ParquetFile(dataset).iter_batches(batch_size=rows)


def _chunk(batches: Iterator[pa.RecordBatch], dataset_id: str) -> pb.ArrowChunk | None:
    """The next batch as a self-contained Arrow IPC chunk; None after the last."""
    batch = next(batches, None)
    if batch is None:
        return None
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return pb.ArrowChunk(arrow_ipc=sink.getvalue().to_pybytes(), rows=batch.num_rows, dataset_id=dataset_id)
