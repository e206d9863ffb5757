"""Codec benchmark: encode+decode of a ~1 KiB TaskAssignment, ours vs upb vs generic.

- ours: the generated straight-line codec (`bytes(msg)`, `TaskAssignment.parse`);
- upb: Google's protobuf, classes made by `grpc_tools.protoc --python_out` into a
  temporary folder from proto/, measured in a subprocess (see `benchmarks.upb_worker`);
  ours and upb run in interleaved rounds (ours, upb, ours, upb, ...: the same machine
  state for both) and the ratio reported is the median of the per-round ratios;
- betterproto2's generic, reflection-driven codec (`betterproto2.Message.__bytes__` and
  `Message.load`), which our generated methods override.
"""

from __future__ import annotations

import importlib.util
import io
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import betterproto2

from aether._wire import pb
from benchmarks.sample import from_epoch_us, sample_fields
from benchmarks.timing import best_ops_per_second

REPO = Path(__file__).resolve().parents[1]
PROTO_ROOT = REPO / "proto"
# The generic codec is ~100× slower than upb: fewer iterations keep the run short.
GENERIC_DIVISOR = 20
_SUBPROCESS_TIMEOUT = 300.0


class BenchmarkError(RuntimeError):
    """A benchmark could not run (a tool failed, or a codec disagreed with another)."""


@dataclass(frozen=True)
class CodecResult:
    """Encode+decode rates of the sample message (operations per second)."""

    message_bytes: int
    iterations: int
    ours_ops_per_s: float
    upb_ops_per_s: float
    upb_implementation: str
    betterproto2_ops_per_s: float | None
    betterproto2_iterations: int
    betterproto2_skipped_reason: str
    #: upb's rate / ours in each interleaved round.
    round_ratios: tuple[float, ...] = ()

    @property
    def ratio_to_upb(self) -> float:
        """How many times slower than upb ours is (1.0 = as fast): the median round."""
        if self.round_ratios:
            return statistics.median(self.round_ratios)
        return self.upb_ops_per_s / self.ours_ops_per_s


def sample_message() -> pb.TaskAssignment:
    """The sample as our generated wire message."""
    f = sample_fields()
    return pb.TaskAssignment(
        task_id=f["task_id"],
        description=f["description"],
        payload=f["payload"],
        task_type=f["task_type"],
        attempt=f["attempt"],
        priority=f["priority"],
        metadata=dict(f["metadata"]),
        workflow_id=f["workflow_id"],
        created_at=from_epoch_us(f["created_at_us"]),
        deadline=from_epoch_us(f["deadline_us"]),
    )


def _wkt_include_dir() -> Path:
    spec = importlib.util.find_spec("grpc_tools")
    if spec is None or not spec.submodule_search_locations:
        raise BenchmarkError("grpc_tools is not installed (pip install grpcio-tools)")
    return Path(next(iter(spec.submodule_search_locations))) / "_proto"


def _run(args: list[str]) -> str:
    done = subprocess.run(
        args, cwd=REPO, capture_output=True, text=True, timeout=_SUBPROCESS_TIMEOUT, check=False
    )
    if done.returncode != 0:
        raise BenchmarkError(
            f"{' '.join(args)} exited with {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
    return done.stdout


def protoc_python_out(out: Path) -> None:
    """Google's Python classes for proto/aether/v1 into `out`, importable as `aether.v1`."""
    files = sorted(
        p.relative_to(PROTO_ROOT).as_posix() for p in PROTO_ROOT.glob("aether/v1/*.proto")
    )
    _run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{_wkt_include_dir()}",
            f"--python_out={out}",
            *files,
        ]
    )
    # Regular packages, so that they win over our `aether` in the worker's sys.path.
    for package in (out / "aether", out / "aether" / "v1"):
        (package / "__init__.py").touch()


#: Interleaved rounds of ours and upb (the ratio is their median).
ROUNDS = 7


def measure_upb(iterations: int) -> tuple[float, str, int]:
    """upb's rate (best of 3), implementation name and encoded size of the sample."""
    with tempfile.TemporaryDirectory(prefix="aether-bench-upb-") as tmp:
        out = Path(tmp)
        protoc_python_out(out)
        stdout = _run([sys.executable, "-m", "benchmarks.upb_worker", str(out), str(iterations)])
    data = json.loads(stdout.strip().splitlines()[-1])
    return float(data["ops_per_s"]), str(data["implementation"]), int(data["message_bytes"])


def _interleaved(
    ours: Callable[[], object], iterations: int, rounds: int
) -> tuple[list[float], list[float], str, int]:
    """Rates of ours and upb in alternating rounds, upb's implementation and size."""
    with tempfile.TemporaryDirectory(prefix="aether-bench-upb-") as tmp:
        out = Path(tmp)
        protoc_python_out(out)
        worker = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.upb_worker", str(out), str(iterations), "--rounds"],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert worker.stdin is not None and worker.stdout is not None
        try:
            head = json.loads(worker.stdout.readline())
            ours_rates: list[float] = []
            upb_rates: list[float] = []
            for _ in range(rounds):
                ours_rates.append(best_ops_per_second(ours, iterations, rounds=1))
                worker.stdin.write("round\n")
                worker.stdin.flush()
                line = worker.stdout.readline()
                if not line:
                    raise BenchmarkError("the upb worker exited during the rounds")
                upb_rates.append(float(json.loads(line)["ops_per_s"]))
        finally:
            worker.stdin.close()
            worker.wait(_SUBPROCESS_TIMEOUT)
    return ours_rates, upb_rates, str(head["implementation"]), int(head["message_bytes"])


def measure(iterations: int, rounds: int = ROUNDS) -> CodecResult:
    """Ours against upb in interleaved rounds (after a warm-up), and the generic codec
    (best of 3)."""
    msg = sample_message()
    data = bytes(msg)
    if pb.TaskAssignment.parse(data) != msg:
        raise BenchmarkError("our codec's round trip changed the message")
    cls = pb.TaskAssignment

    def ours() -> object:
        return cls.parse(bytes(msg))

    best_ops_per_second(ours, max(1, iterations // 10), rounds=1)  # warm-up
    ours_rates, upb_rates, implementation, upb_size = _interleaved(ours, iterations, rounds)
    if upb_size != len(data):
        raise BenchmarkError(f"upb encodes the sample in {upb_size} bytes, ours in {len(data)}")

    generic_iterations = max(1, iterations // GENERIC_DIVISOR)
    generic_rate: float | None = None
    skipped = ""
    try:
        generic_rate = _measure_generic(msg, data, generic_iterations)
    except (AttributeError, TypeError) as exc:  # betterproto2 changed its internals
        skipped = f"betterproto2's generic codec is not reachable: {exc}"
    return CodecResult(
        message_bytes=len(data),
        iterations=iterations,
        ours_ops_per_s=statistics.median(ours_rates),
        upb_ops_per_s=statistics.median(upb_rates),
        upb_implementation=implementation,
        betterproto2_ops_per_s=generic_rate,
        betterproto2_iterations=generic_iterations,
        betterproto2_skipped_reason=skipped,
        round_ratios=tuple(u / o for u, o in zip(upb_rates, ours_rates, strict=True)),
    )


def _measure_generic(msg: pb.TaskAssignment, data: bytes, iterations: int) -> float:
    """betterproto2's reflection-driven encode (`Message.__bytes__`) and decode (`load`)."""
    generic_bytes = betterproto2.Message.__bytes__
    cls = pb.TaskAssignment

    def decode(raw: bytes) -> pb.TaskAssignment:
        with io.BytesIO(raw) as stream:
            return cls().load(stream)

    if decode(generic_bytes(msg)) != msg or decode(data) != msg:
        raise BenchmarkError("betterproto2's generic codec disagrees with ours on the sample")

    def generic() -> object:
        return decode(generic_bytes(msg))

    return best_ops_per_second(generic, iterations, warmup=max(1, iterations // 10))
