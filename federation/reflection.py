"""Server reflection under both names clients ask for: ``grpc.reflection.v1`` and ``v1alpha``.

grpcio-reflection serves only ``v1alpha``; grpcurl's ``--reflect-protocol grpc-v1``, buf curl and
newer clients ask for ``v1`` first. The two versions' messages are the same fields with the same
numbers (v1 only moved the package), so v1 is served by the same servicer with the v1alpha message
classes: the bytes on the wire are identical.
"""

from __future__ import annotations

from typing import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
V1ALPHA_SERVICE_NAME = reflection.SERVICE_NAME
SERVICE_NAMES = (V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME)
_METHOD = "ServerReflectionInfo"


V1_FILE = "grpc/reflection/v1/reflection.proto"


def _describe_v1() -> None:
    """Put v1's descriptor in the default pool (v1alpha's under v1's package name), so the service
    reflection lists can itself be described (`grpcurl describe grpc.reflection.v1.ServerReflection`)."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(V1_FILE)
        return  # there already (a grpcio-reflection that ships v1, or an earlier call)
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name, proto.package = V1_FILE, "grpc.reflection.v1"
    for message in proto.message_type:
        for f in message.field:
            if f.type_name.startswith(".grpc.reflection.v1alpha."):
                f.type_name = ".grpc.reflection.v1." + f.type_name.rsplit(".", 1)[1]
    for service in proto.service:
        for method in service.method:
            method.input_type = ".grpc.reflection.v1." + method.input_type.rsplit(".", 1)[1]
            method.output_type = ".grpc.reflection.v1." + method.output_type.rsplit(".", 1)[1]
    pool.Add(proto)


class ServerReflection(grpc.GenericRpcHandler):
    """Both versions of reflection for ``services`` (the two reflection services listed too)."""

    def __init__(self, services: Iterable[str]) -> None:
        _describe_v1()
        servicer = reflection.ReflectionServicer(tuple(services) + SERVICE_NAMES)
        self._handler = grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
        self._paths = {f"/{name}/{_METHOD}" for name in SERVICE_NAMES}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._handler if handler_call_details.method in self._paths else None
