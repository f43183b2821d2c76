"""Request messages parsed so that bytes which are not the expected message are the caller's
mistake (INVALID_ARGUMENT), not the server's.

grpc's asyncio server answers a request deserializer's exception with UNKNOWN, and its thread-pool
server with INTERNAL. A parser from ``parser()`` returns a ``Malformed`` instead of raising; the
method's handler turns it into an ``InvalidRequest`` like any other bad input, counted in the
metrics with the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from google.protobuf.message import DecodeError

from serving.errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class Malformed:
    """What arrived instead of a request message."""

    message_type: str

    def error(self) -> InvalidRequest:
        return InvalidRequest(f"malformed request: the bytes sent are not a valid {self.message_type}")


def parser(message_class: Any) -> Callable[[bytes], Any]:
    """``message_class.FromString``, returning a ``Malformed`` where the bytes do not parse."""
    from_string = message_class.FromString
    malformed = Malformed(message_class.DESCRIPTOR.full_name)

    def parse(data: bytes) -> Any:
        try:
            return from_string(data)
        except DecodeError:
            return malformed

    return parse


__all__ = ["Malformed", "parser"]
