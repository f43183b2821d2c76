"""What a request may hold beyond the fields its contract names: nothing.

Python's protobuf keeps the fields it does not know (it must, to pass them on), so a request with
a field number the contract never defined would reach the centre's code, and anything stored from
its serialisation (the submission's content hash, a replay's comparison) would carry them: a covert
channel. An enum field of proto3 keeps an unknown number as it came. Every request of the centre's
services is checked here as it is parsed, before any method reads it:

- rule unknown_fields: the message, or one nested in it, holds a field the contract does not define;
- rule enum: an enum field holds a number its enum does not define.
"""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from fedstore.aggregator.errors import Rejected


def refusal(message: Message) -> Rejected | None:
    """Why ``message`` is refused (its rule), or None when it holds only its contract's fields."""
    bare = type(message)()
    bare.CopyFrom(message)
    bare.DiscardUnknownFields()  # recursive: nested messages' unknown fields go too
    if bare.ByteSize() != message.ByteSize():
        return Rejected(f"the {message.DESCRIPTOR.full_name} holds fields its contract does not define; "
                        "the centre accepts only the fields it knows", rule="unknown_fields")
    enum = _enums(message)
    return Rejected(enum, rule="enum") if enum else None


def _enums(message: Message) -> str:
    for field, value in message.ListFields():
        if field.type == FieldDescriptor.TYPE_ENUM:
            values = list(value) if _repeated(field) else [value]
            for v in values:
                if field.enum_type.values_by_number.get(v) is None:
                    return (f"{field.full_name} has no value {v}; known: "
                            f"{', '.join(e.name for e in field.enum_type.values)}")
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                children = list(value.values()) if field.message_type.fields_by_name["value"].message_type else []
            else:
                children = list(value) if _repeated(field) else [value]
            for child in children:
                found = _enums(child)
                if found:
                    return found
    return ""


def _repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)
