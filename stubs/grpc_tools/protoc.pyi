# Type stubs for grpc_tools.protoc: only the entry point codegen calls.
from collections.abc import Sequence

def main(command_arguments: Sequence[str]) -> int: ...
