"""The custom metadata of an ONNX model file (``ModelProto.metadata_props``), read without onnx.

Hand-written on purpose: sherpa-onnx offers no way to read a model's metadata and ends the whole
process (``_Exit``) when the keys it needs are missing, so they must be checked before it sees the
file; the ``onnx`` package (with protobuf, ~30 MB) would be a runtime dependency for two integers.
Only the top level of the protobuf is walked; the graph and its weights are skipped by length.
"""

from __future__ import annotations

from pathlib import Path

#: ModelProto's field numbers (onnx.proto): ``graph``, ``metadata_props`` and, inside each entry,
#: key and value.
_GRAPH, _METADATA_PROPS = 7, 14
_KEY, _VALUE = 1, 2
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


class NotOnnx(ValueError):
    """The bytes are not a protobuf-encoded ONNX model."""


def read_metadata(path: Path) -> dict[str, str]:
    """The model's metadata as key → value (empty when it has none); ``NotOnnx`` when the file
    does not parse as a protobuf message."""
    data = path.read_bytes()
    if not data:
        raise NotOnnx("the file is empty")
    metadata: dict[str, str] = {}
    fields = _fields(memoryview(data))
    if not any(field == _GRAPH for field, _ in fields):
        raise NotOnnx("no graph")
    for field, value in fields:
        if field == _METADATA_PROPS:
            if not isinstance(value, memoryview):
                raise NotOnnx("a metadata entry is not a message")
            entry = {f: v for f, v in _fields(value) if isinstance(v, memoryview)}
            try:
                metadata[bytes(entry.get(_KEY, b"")).decode()] = bytes(entry.get(_VALUE, b"")).decode()
            except UnicodeDecodeError as error:
                raise NotOnnx("a metadata entry is not text") from error
    return metadata


def _fields(data: memoryview) -> list[tuple[int, int | memoryview]]:
    """The fields of one protobuf message: (number, integer or the bytes of a length-delimited one)."""
    fields: list[tuple[int, int | memoryview]] = []
    position, end = 0, len(data)
    while position < end:
        key, position = _varint(data, position)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise NotOnnx("field number 0")
        if wire == _VARINT:
            value, position = _varint(data, position)
            fields.append((number, value))
        elif wire == _LENGTH:
            length, position = _varint(data, position)
            if position + length > end:
                raise NotOnnx("a field runs past the end of the file")
            fields.append((number, data[position : position + length]))
            position += length
        elif wire in (_FIXED64, _FIXED32):
            position += 8 if wire == _FIXED64 else 4
            if position > end:
                raise NotOnnx("a field runs past the end of the file")
        else:
            raise NotOnnx(f"wire type {wire}")
    return fields


def _varint(data: memoryview, position: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if position >= len(data) or shift > 63:
            raise NotOnnx("a number runs past the end of the file")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
