"""Client for a region's training-set stream: returns a pyarrow Table or writes Parquet."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from fedstore.proto.fedstore.datasets.v1 import datasets_pb2 as pb
from fedstore.proto.fedstore.datasets.v1 import datasets_pb2_grpc

MAX_MESSAGE = 256 * 1024 * 1024


class DatasetClient:
    def __init__(self, address: str, token: str | None = None, *, root_certificates: bytes | None = None,
                 timeout: float = 3600.0) -> None:
        options = [("grpc.max_send_message_length", MAX_MESSAGE), ("grpc.max_receive_message_length", MAX_MESSAGE)]
        if root_certificates is not None:
            self._channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates), options)
        else:
            self._channel = grpc.insecure_channel(address, options)
        self._stub = datasets_pb2_grpc.HistoricalFeaturesStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout = timeout
        self.last_dataset_id: str | None = None

    def _stream(self, region: str, entities: Any, feature_service: str, label: str | None, chunk_rows: int):
        table = entities if isinstance(entities, pa.Table) else pa.Table.from_pandas(entities, preserve_index=False)
        sink = pa.BufferOutputStream()
        with ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        request = pb.GetHistoricalFeaturesRequest(
            region=region, feature_service=feature_service, label=label or "",
            entities_arrow=sink.getvalue().to_pybytes(), max_chunk_rows=chunk_rows,
        )
        for chunk in self._stub.GetHistoricalFeatures(request, timeout=self.timeout, metadata=self._metadata):
            self.last_dataset_id = chunk.dataset_id
            yield from ipc.open_stream(chunk.arrow_ipc).read_all().to_batches()

    def get_historical_features(self, *, region: str, entities: Any, feature_service: str,
                                label: str | None = None, chunk_rows: int = 65_536) -> pa.Table:
        return pa.Table.from_batches(list(self._stream(region, entities, feature_service, label, chunk_rows)))

    def write_parquet(self, path: Path, *, region: str, entities: Any, feature_service: str,
                      label: str | None = None, chunk_rows: int = 65_536) -> int:
        """Stream the training set into a Parquet file without holding it all in memory."""
        rows = 0
        writer: pq.ParquetWriter | None = None
        tmp = path.with_name(f".{path.name}.partial")
        try:
            for batch in self._stream(region, entities, feature_service, label, chunk_rows):
                if writer is None:
                    writer = pq.ParquetWriter(tmp, batch.schema)
                writer.write_batch(batch)
                rows += batch.num_rows
        except BaseException:
            if writer is not None:
                writer.close()
            tmp.unlink(missing_ok=True)
            raise
        if writer is not None:
            writer.close()
            tmp.replace(path)
        return rows

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "DatasetClient":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
