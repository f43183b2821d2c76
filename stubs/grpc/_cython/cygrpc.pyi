# The part of grpc's private core binding (``grpc._cython.cygrpc``, a Cython extension) that
# fedstore uses: the lookup lane (serving/lookup_lane.py), against grpcio >=1.85.1,<1.86 (pyproject.toml).
# Written from that release's classes; no catch-all, so a new use of the private core fails type
# checking until it is declared here, and the lane's ``missing_pieces`` checks these names at run time.
# Anything grpc's own modules use beyond this is theirs.

from typing import Sequence

Metadata = tuple[tuple[str, str | bytes], ...]

class CompletionType:
    queue_shutdown: int
    queue_timeout: int
    operation_complete: int

class Operation: ...

class ReceiveMessageOperation(Operation):
    def __init__(self, flags: int) -> None: ...
    def message(self) -> bytes | None: ...

class SendInitialMetadataOperation(Operation):
    def __init__(self, initial_metadata: Metadata | None, flags: int) -> None: ...

class SendMessageOperation(Operation):
    def __init__(self, message: bytes, flags: int) -> None: ...

class ReceiveCloseOnServerOperation(Operation):
    def __init__(self, flags: int) -> None: ...
    def cancelled(self) -> bool: ...

class SendStatusFromServerOperation(Operation):
    def __init__(self, trailing_metadata: Metadata | None, code: int, details: bytes, flags: int) -> None: ...

class CallDetails:
    method: bytes
    host: bytes
    deadline: float  # unix seconds; a time near 2**63 seconds when the call has none

class Call:
    def start_server_batch(self, operations: Sequence[Operation], tag: object) -> int: ...  # a grpc_call_error
    def cancel(self, error_code: int, details: str) -> int: ...

class BaseEvent:
    completion_type: int
    success: bool
    tag: object

class ConnectivityEvent(BaseEvent): ...  # also what a queue's timeout and shutdown are

class RequestCallEvent(BaseEvent):
    call: Call
    call_details: CallDetails
    invocation_metadata: Metadata

class BatchOperationEvent(BaseEvent):
    batch_operations: tuple[Operation, ...]

class CompletionQueue:
    def __init__(self, shutdown_cq: bool = ...) -> None: ...
    def poll(self, deadline: float | None = ...) -> ConnectivityEvent | RequestCallEvent | BatchOperationEvent: ...
    def shutdown(self) -> None: ...

class Server:
    def register_completion_queue(self, queue: CompletionQueue) -> None: ...
    def register_method(self, method: str) -> object: ...
    def request_registered_call(
        self, call_queue: CompletionQueue, server_queue: CompletionQueue, method: str, tag: object
    ) -> None: ...
