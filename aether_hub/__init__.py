"""The Aether Hub (`aether hub`): the server agents and clients talk to.

One process per replica: sessions, the task queue with leases, memory, messaging, tools and
the LLM gateway, health and reflection. It imports the generated package `aether_api` (through
`aether_hub._wire`) and only public names of the SDK `aether`; `aether` never imports it.
Its run-time dependencies beyond the SDK's are the `[hub]` extra (nats-py, httpx).
"""
