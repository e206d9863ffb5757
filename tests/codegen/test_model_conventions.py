"""The two model conventions the protos opt into, on a proto made for them.

- a plain ``string x_json`` field gets the model method ``x()``: the field parsed as JSON;
- a message field whose comment says "(empty if unset)" is never None in the model.

The proto is generated into a temporary package, imported and used (the golden test pins
the text; this one checks the names and the behaviour).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

from codegen import __main__ as cli
from codegen import build, descriptors, writer

PROTO = """\
syntax = "proto3";

// Conventions under test.
package conv.v1;

// Every shape of a `_json` field.
message Doc {
  // Gets value().
  string value_json = 1;
  // Also named value: the accessor of value_json becomes value_().
  int32 value = 2;
  // The accessor name is escaped like a field name: json_().
  string json_json = 3;
  // Repeated: no accessor.
  repeated string list_json = 4;
  // Proto3 optional: no accessor.
  optional string maybe_json = 5;
  // Bytes: no accessor.
  bytes blob_json = 6;
  // A oneof member: no accessor.
  oneof choice {
    // One choice.
    string pick_json = 7;
  }
  // Escaped model attribute: copy_().
  string copy_json = 8;
}

// A small message.
message Counts {
  // A count.
  int32 n = 1;
}

// Message fields with and without the marker.
message Holder {
  // Never None (empty if unset).
  Counts counts = 1;
  // Keeps presence.
  Counts plain = 2;
  // Marker ignored: explicit presence (empty if unset).
  optional Counts opt = 3;
}
"""


@pytest.fixture(scope="module")
def proto_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("conv-proto")
    (root / "conv" / "v1").mkdir(parents=True)
    (root / "conv" / "v1" / "conv.proto").write_text(PROTO)
    return root


@pytest.fixture(scope="module")
def conv_models(proto_root: Path, tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    out = tmp_path_factory.mktemp("conv-out")
    writer.write(out, cli.generate("conv_api", [proto_root]))
    sys.path.insert(0, str(out))
    try:
        return importlib.import_module("conv_api.conv.v1.models")
    finally:
        sys.path.remove(str(out))


def test_accessor_names(proto_root: Path) -> None:
    (package,) = [p for p in build.build(descriptors.build_descriptor_set([proto_root])) if p.parts]
    doc = next(m for m in package.messages if m.py_name == "Doc")
    assert [(a.py_name, a.field) for a in doc.json_accessors] == [
        ("value_", "value_json"),
        ("json_", "json_json"),
        ("copy_", "copy_json"),
    ]


def test_accessors_parse(conv_models: ModuleType) -> None:
    doc = conv_models.Doc(value_json='{"a": 1}', value=3, json_json="[1]", copy_json='"c"')
    assert doc.value_() == {"a": 1} and doc.value == 3
    assert doc.json_() == [1] and doc.copy_() == "c"
    assert conv_models.Doc().value_() is None
    for absent in ("list", "maybe", "blob", "pick"):
        assert not hasattr(conv_models.Doc, absent)
    with pytest.raises(ValueError, match=r"^Doc\.json_json is not valid JSON: "):
        conv_models.Doc(json_json="{").json_()


def test_empty_if_unset(conv_models: ModuleType) -> None:
    holder_cls, counts_cls = conv_models.Holder, conv_models.Counts
    wire_cls = type(holder_cls().to_wire())
    # Unset on the wire reads as the empty message; the others keep None.
    read = holder_cls.from_wire(wire_cls())
    assert read.counts == counts_cls() and read.plain is None and read.opt is None
    assert holder_cls().counts == counts_cls()
    assert holder_cls.model_fields["opt"].default is None
    # An empty one is written unset; a non-empty one as it is.
    assert holder_cls().to_wire() == wire_cls()
    written = holder_cls(counts=counts_cls(n=2)).to_wire()
    assert written.counts is not None and written.counts.n == 2
    assert holder_cls.from_wire(wire_cls.parse(bytes(written))).counts.n == 2
    # Not Optional: assigning None is refused.
    with pytest.raises(ValueError, match="counts"):
        holder_cls().counts = None
