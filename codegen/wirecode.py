"""Text of the straight-line codec of one field (``__bytes__`` and ``parse`` bodies).

The generated code calls the small primitives of the output package's ``codec`` module
(imported as ``_codec``); everything type-specific (tags, readers, writers) is decided here.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import descriptor_pb2

_FDP = descriptor_pb2.FieldDescriptorProto

# proto type → (writer, wire type, reader, zero value)
_SCALARS: dict[int, tuple[str, int, str, str]] = {
    _FDP.TYPE_INT32: ("put_int", 0, "read_int32", "0"),
    _FDP.TYPE_INT64: ("put_int", 0, "read_int64", "0"),
    _FDP.TYPE_UINT32: ("put_int", 0, "read_uint32", "0"),
    _FDP.TYPE_UINT64: ("put_int", 0, "read_uint64", "0"),
    _FDP.TYPE_SINT32: ("put_sint", 0, "read_sint32", "0"),
    _FDP.TYPE_SINT64: ("put_sint", 0, "read_sint64", "0"),
    _FDP.TYPE_BOOL: ("put_bool", 0, "read_bool", "False"),
    _FDP.TYPE_FIXED32: ("put_fixed32", 5, "read_fixed32", "0"),
    _FDP.TYPE_SFIXED32: ("put_sfixed32", 5, "read_sfixed32", "0"),
    _FDP.TYPE_FLOAT: ("put_float", 5, "read_float", "0.0"),
    _FDP.TYPE_FIXED64: ("put_fixed64", 1, "read_fixed64", "0"),
    _FDP.TYPE_SFIXED64: ("put_sfixed64", 1, "read_sfixed64", "0"),
    _FDP.TYPE_DOUBLE: ("put_double", 1, "read_double", "0.0"),
    _FDP.TYPE_STRING: ("put_str", 2, "read_str", '""'),
    _FDP.TYPE_BYTES: ("put_bytes", 2, "read_bytes", 'b""'),
}
_ONE_BYTE_INTS = (_FDP.TYPE_INT32, _FDP.TYPE_INT64, _FDP.TYPE_UINT32, _FDP.TYPE_UINT64)
_DEFAULT_FACTORIES = {"0": "int", "0.0": "float", "False": "bool", '""': "str", 'b""': "bytes"}


@dataclass(frozen=True)
class Element:
    """How one value of a field's element type is written and read.

    ``ref`` is the class text (enum, message or the wrapping WKT class) in the messages
    module; ``kind`` is ``scalar``, ``enum``, ``message`` or ``wrapped``.
    """

    type: int
    kind: str
    ref: str
    zero: str
    """Zero value (scalars, enums); empty for messages."""

    @property
    def wire(self) -> int:
        if self.kind in ("message", "wrapped"):
            return 2
        if self.kind == "enum":
            return 0
        return _SCALARS[self.type][1]

    wkt: str = ""
    """``timestamp`` or ``duration`` for the wrapped kinds (coded without the WKT class)."""

    @property
    def writer(self) -> str:
        if self.kind == "scalar":
            return f"_codec.{_SCALARS[self.type][0]}"
        if self.kind == "enum":
            return "_codec.put_int"
        if self.kind == "message":
            return "_codec.put_message"
        return f"_codec.put_{self.wkt}"

    @property
    def parse(self) -> str:
        """Callable bytes → value (messages only)."""
        return f"{self.ref}.parse"

    @property
    def reader(self) -> str:
        """A ``_codec.Reader`` (scalars, enums, wrapped WKTs)."""
        if self.kind == "scalar":
            return f"_codec.{_SCALARS[self.type][2]}"
        if self.kind == "enum":
            return f"_codec.enum_reader({self.ref})"
        if self.kind == "wrapped":
            return f"_codec.read_{self.wkt}"
        raise ValueError("a message is read with parse (or merger), not a Reader")

    @property
    def merger(self) -> str:
        """A ``_codec.Merger`` (messages and wrapped WKTs): reads one occurrence merged into
        the value so far."""
        if self.kind == "wrapped":
            return f"_codec.read_{self.wkt}"
        if self.kind == "message":
            return f"_codec.message_merger({self.parse})"
        raise ValueError(f"a {self.kind} value is not merged")

    @property
    def merges(self) -> bool:
        """Whether a repeated occurrence merges into the value (messages, wrapped WKTs)."""
        return self.kind in ("message", "wrapped")

    @property
    def default_factory(self) -> str:
        if self.kind == "scalar":
            return _DEFAULT_FACTORIES[self.zero]
        if self.kind == "enum":
            return f"lambda: {self.zero}"
        if self.kind == "message":
            return self.ref
        return "lambda: _codec.EPOCH" if self.wkt == "timestamp" else "datetime.timedelta"

    @property
    def packable(self) -> bool:
        return self.kind == "enum" or (self.kind == "scalar" and self.wire != 2)


def scalar_zero(fd_type: int) -> str:
    """The zero value text of a scalar type."""
    return _SCALARS[fd_type][3]


def tag(number: int, wire: int) -> str:
    """The tag of a field as a bytes literal."""
    return repr(_tag_bytes(number, wire))


def _tag_bytes(number: int, wire: int) -> bytes:
    value = (number << 3) | wire
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def tag_int(number: int, wire: int) -> int:
    """The tag of a field as the int the decoder compares with."""
    return (number << 3) | wire


@dataclass(frozen=True)
class FieldCode:
    """The codec text of one field."""

    decl: str
    encode: tuple[str, ...]
    decode: tuple[tuple[int, str], ...]


def singular(name: str, number: int, el: Element, annotation: str, presence: bool) -> FieldCode:
    """A singular field (with presence: message, proto3 optional, oneof member)."""
    var = f"f_{name}"
    attr = f"self.{name}"
    put = f"{el.writer}(out, {tag(number, el.wire)}, {attr})"
    if presence:
        test = f"if {attr} is not None:"
    elif el.kind == "scalar" and el.type in (_FDP.TYPE_FLOAT, _FDP.TYPE_DOUBLE):
        # -0.0 is not the zero value: protobuf compares bits.
        test = f"if {attr} or _codec.is_negative_zero({attr}):"
    else:
        test = f"if {attr}:"
    if el.kind == "message":
        read = f"{var}, pos = _codec.read_message(data, pos, {el.parse}, {var})"
    elif el.kind == "wrapped":
        read = f"{var}, pos = {el.reader}(data, pos, {var})"
    elif el.kind == "enum":
        read = f"{var}, pos = _codec.read_enum(data, pos, {el.ref})"
    elif el.kind == "scalar" and el.wire == 2:
        read = _inline_length_delimited(var, el)
    elif el.kind == "scalar" and (el.type in _ONE_BYTE_INTS or el.type == _FDP.TYPE_BOOL):
        # A value under 128 (one varint byte) read in place; the reader does the rest.
        value = "byte != 0" if el.type == _FDP.TYPE_BOOL else "byte"
        read = "\n".join(
            (
                "if pos < end and (byte := data[pos]) < 0x80:",
                f"    {var} = {value}",
                "    pos += 1",
                "else:",
                f"    {var}, pos = {el.reader}(data, pos)",
            )
        )
    else:
        read = f"{var}, pos = {el.reader}(data, pos)"
    default = "None" if presence else el.zero
    return FieldCode(
        decl=f"{var}: {annotation} = {default}",
        encode=(test, *(f"    {line}" for line in _inline_put(attr, number, el, put))),
        decode=((tag_int(number, el.wire), read),),
    )


def _inline_put(attr: str, number: int, el: Element, put: str) -> tuple[str, ...]:
    """The statements writing one singular value: strings, bytes and the varint ints in
    place (no call; a length or value under 128 appended as one byte), the rest through
    the ``_codec`` writer."""
    field_tag = tag(number, el.wire)
    if el.kind == "enum":
        # betterproto2's Enum is an IntEnum: bytearray.append takes it as an int. (No
        # local: one name would take the types of several enums.)
        return (
            f"out += {field_tag}",
            f"if 0 <= {attr} < 0x80:",
            f"    out.append({attr})",
            "else:",
            f"    out += _codec.varint({attr})",
        )
    if el.kind != "scalar":
        return (put,)
    if el.type == _FDP.TYPE_BOOL:
        # Tag and value in one constant (a presence bool may be False).
        true = repr(_tag_bytes(number, el.wire) + b"\x01")
        false = repr(_tag_bytes(number, el.wire) + b"\x00")
        return (f"out += {true} if {attr} else {false}",)
    if el.wire == 2:
        raw = f"{attr}.encode()" if el.type == _FDP.TYPE_STRING else attr
        return (
            f"raw = {raw}",
            "size = len(raw)",
            f"out += {field_tag}",
            "if size < 0x80:",
            "    out.append(size)",
            "else:",
            "    out += _codec.varint(size)",
            "out += raw",
        )
    if el.type in _ONE_BYTE_INTS:
        return (
            f"value = {attr}",
            f"out += {field_tag}",
            "if 0 <= value < 0x80:",
            "    out.append(value)",
            "else:",
            "    out += _codec.varint(value)",
        )
    return (put,)


def _inline_length_delimited(var: str, el: Element) -> str:
    # A string or bytes value shorter than 128 bytes (one-byte length), read in place:
    # no call, no tuple. `end` is len(data) and `start` is free until the next tag.
    value = "data[start:pos].decode()" if el.type == _FDP.TYPE_STRING else "data[start:pos]"
    return "\n".join(
        (
            "if pos < end and (size := data[pos]) < 0x80 and (start := pos + 1) + size <= end:",
            "    pos = start + size",
            f"    {var} = {value}",
            "else:",
            f"    {var}, pos = {el.reader}(data, pos)",
        )
    )


def repeated(name: str, number: int, el: Element, annotation: str, packed: bool) -> FieldCode:
    """A repeated field (packed when the type allows and the proto does not forbid it)."""
    var = f"f_{name}"
    attr = f"self.{name}"
    if el.packable and packed:
        encode: tuple[str, ...] = (
            f"if {attr}:",
            f"    _codec.put_packed(out, {tag(number, 2)}, {attr}, {el.writer})",
        )
    else:
        encode = (f"_codec.put_each(out, {tag(number, el.wire)}, {attr}, {el.writer})",)
    if el.packable:
        decode: tuple[tuple[int, str], ...] = (
            (tag_int(number, 2), f"pos = _codec.extend_packed({var}, data, pos, {el.reader})"),
            (tag_int(number, el.wire), f"pos = _codec.append_one({var}, data, pos, {el.reader})"),
        )
    elif el.kind == "message":
        decode = (
            (tag_int(number, 2), f"pos = _codec.append_message({var}, data, pos, {el.parse})"),
        )
    else:
        decode = ((tag_int(number, 2), f"pos = _codec.append_one({var}, data, pos, {el.reader})"),)
    return FieldCode(decl=f"{var}: {annotation} = []", encode=encode, decode=decode)


def mapping(name: str, number: int, key: Element, value: Element, annotation: str) -> FieldCode:
    """A map field: one entry message per item."""
    var = f"f_{name}"
    attr = f"self.{name}"
    if _is_string(key) and _is_string(value):
        # The common metadata map: specialised helpers, no per-item writer/reader calls.
        return FieldCode(
            decl=f"{var}: {annotation} = {{}}",
            encode=(f"if {attr}:", f"    _codec.put_str_map(out, {tag(number, 2)}, {attr})"),
            decode=((tag_int(number, 2), _read_str_entries(var, number)),),
        )
    # The readers put an entry with other fields than key and value among the unknown
    # fields, under the map's tag (see `_codec.read_entry_into`).
    map_tag = tag(number, 2)
    put = (
        f"_codec.put_map(out, {map_tag}, {attr}, {key.writer}, {tag(1, key.wire)}, "
        f"{value.writer}, {tag(2, value.wire)})"
    )
    if value.merges:
        read = (
            f"pos = _codec.read_merged_entry_into({var}, data, pos, {key.reader}, {key.wire}, "
            f"{key.zero}, {value.merger}, {value.default_factory}, unknown, {map_tag})"
        )
    else:
        read = (
            f"pos = _codec.read_entry_into({var}, data, pos, {key.reader}, {key.wire}, "
            f"{key.zero}, {value.reader}, {value.wire}, {value.default_factory}, unknown, "
            f"{map_tag})"
        )
    return FieldCode(
        decl=f"{var}: {annotation} = {{}}",
        encode=(f"if {attr}:", f"    {put}"),
        decode=((tag_int(number, 2), read),),
    )


def _is_string(el: Element) -> bool:
    return el.kind == "scalar" and el.type == _FDP.TYPE_STRING


def _read_str_entries(var: str, number: int) -> str:
    tag_value = tag_int(number, 2)
    if tag_value < 0x80:
        # Entries come in a run: read all of them in one call (one pass of parse's loop).
        return f"pos = _codec.read_str_entries_into({var}, data, pos, {tag_value}, unknown)"
    return f"pos = _codec.read_str_entry_into({var}, data, pos, unknown, {tag(number, 2)})"
