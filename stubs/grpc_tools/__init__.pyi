# Type stubs for grpc_tools (grpcio-tools ships none); only what codegen uses.
