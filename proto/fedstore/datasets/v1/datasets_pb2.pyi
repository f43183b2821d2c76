from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class GetHistoricalFeaturesRequest(_message.Message):
    __slots__ = ("region", "feature_service", "label", "entities_arrow", "max_chunk_rows")
    REGION_FIELD_NUMBER: _ClassVar[int]
    FEATURE_SERVICE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    ENTITIES_ARROW_FIELD_NUMBER: _ClassVar[int]
    MAX_CHUNK_ROWS_FIELD_NUMBER: _ClassVar[int]
    region: str
    feature_service: str
    label: str
    entities_arrow: bytes
    max_chunk_rows: int
    def __init__(self, region: _Optional[str] = ..., feature_service: _Optional[str] = ..., label: _Optional[str] = ..., entities_arrow: _Optional[bytes] = ..., max_chunk_rows: _Optional[int] = ...) -> None: ...

class ArrowChunk(_message.Message):
    __slots__ = ("arrow_ipc", "rows", "dataset_id")
    ARROW_IPC_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    arrow_ipc: bytes
    rows: int
    dataset_id: str
    def __init__(self, arrow_ipc: _Optional[bytes] = ..., rows: _Optional[int] = ..., dataset_id: _Optional[str] = ...) -> None: ...
