"""Google's upb protobuf side of the codec benchmark; runs in its own process.

    python -m benchmarks.upb_worker PB_DIR ITERATIONS [--rounds]

PB_DIR holds `grpc_tools.protoc --python_out` output for proto/aether/v1 (made by
`benchmarks.codec`). Those modules are named `aether.v1.*_pb2`, which clashes with our
SDK package `aether`, so they are imported here, in a process that never imports the SDK,
with PB_DIR first on sys.path. Prints one JSON object: ops_per_s and message_bytes.

With `--rounds` it warms up, prints that object (its ops_per_s from the warm-up), then
times one round of ITERATIONS for every line read from stdin, printing
`{"ops_per_s": R}` after each: the codec benchmark interleaves these rounds with its own.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

from google.protobuf import message
from google.protobuf.internal import api_implementation

from benchmarks.sample import sample_fields
from benchmarks.timing import best_ops_per_second


def _timestamp(us: int) -> dict[str, int]:
    seconds, micros = divmod(us, 1_000_000)
    return {"seconds": seconds, "nanos": micros * 1000}


def build(pb_dir: Path) -> message.Message:
    """The sample TaskAssignment as a protoc-generated (upb) message."""
    sys.path.insert(0, str(pb_dir))
    module = importlib.import_module("aether.v1.agent_pb2")
    origin = Path(str(module.__file__)).resolve()
    if pb_dir.resolve() not in origin.parents:
        raise RuntimeError(f"imported {origin}, not the protoc output under {pb_dir}")
    cls: type[message.Message] = module.TaskAssignment
    fields = sample_fields()
    # Keyword construction, as protoc's classes document; timestamps as dicts.
    kwargs: dict[str, object] = {
        "task_id": fields["task_id"],
        "description": fields["description"],
        "payload": fields["payload"],
        "task_type": fields["task_type"],
        "attempt": fields["attempt"],
        "priority": fields["priority"],
        "metadata": fields["metadata"],
        "workflow_id": fields["workflow_id"],
        "created_at": _timestamp(fields["created_at_us"]),
        "deadline": _timestamp(fields["deadline_us"]),
    }
    msg = cls(**kwargs)
    return msg


def main(argv: list[str]) -> int:
    """Measure encode+decode of the sample with upb; print JSON."""
    pb_dir, iterations = Path(argv[0]), int(argv[1])
    msg = build(pb_dir)
    cls = type(msg)
    data = msg.SerializeToString()
    if cls.FromString(data) != msg:
        raise RuntimeError("upb round trip changed the message")

    def op() -> object:
        return cls.FromString(msg.SerializeToString())

    if len(argv) > 2 and argv[2] == "--rounds":
        return _rounds(op, iterations, len(data))
    rate = best_ops_per_second(op, iterations, warmup=max(1, iterations // 10))
    out = {
        "implementation": api_implementation.Type(),
        "ops_per_s": rate,
        "message_bytes": len(data),
    }
    print(json.dumps(out))
    return 0


def _rounds(op: Callable[[], object], iterations: int, size: int) -> int:
    warmup = best_ops_per_second(op, max(1, iterations // 10), rounds=1)
    out = {"implementation": api_implementation.Type(), "ops_per_s": warmup, "message_bytes": size}
    print(json.dumps(out), flush=True)
    for _ in sys.stdin:
        rate = best_ops_per_second(op, iterations, rounds=1)
        print(json.dumps({"ops_per_s": rate}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
