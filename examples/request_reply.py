"""A request/reply pair of agents over the Hub's messaging.

- `QuoteService` answers requests on the subject `pricing.quote` (it subscribes when it
  starts, in a queue group, so several copies share the load).
- `OrderAgent` takes tasks; for each it asks `pricing.quote` for a price and returns it.

Both run in this one process. Against `aether hub --dev`:

    HUB_URL=localhost:50051 python examples/request_reply.py

and send the order agent a task whose payload is JSON `{"item": "widget", "quantity": 3}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal

from aether_sdk import AetherAgent, AgentConfig, JsonValue, TaskAssignment, TaskResult

SUBJECT = "pricing.quote"
PRICES = {"widget": 2.5, "gadget": 10.0}


class QuoteService(AetherAgent):
    """Answers price requests on `pricing.quote`; takes no tasks of its own."""

    _listener: asyncio.Task[None] | None = None

    async def on_start(self) -> None:
        self._listener = asyncio.create_task(self._serve())

    async def on_stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener

    async def _serve(self) -> None:
        async for request in self.hub.messaging.subscribe(SUBJECT, queue_group="pricing"):
            try:
                order = json.loads(request.payload)
                item, quantity = str(order["item"]), int(order["quantity"])
                if item not in PRICES:
                    reply: JsonValue = {"error": f"unknown item {item!r}"}
                else:
                    reply = {"item": item, "quantity": quantity, "total": PRICES[item] * quantity}
            except (ValueError, KeyError, TypeError) as exc:
                reply = {"error": f"bad request: {exc}"}
            if request.reply_to:
                await self.hub.messaging.publish(request.reply_to, reply)

    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        return TaskResult(
            task_id=task.task_id,
            success=False,
            error_message=f"{self.config.agent_id} answers on {SUBJECT}; it takes no tasks",
        )


class OrderAgent(AetherAgent):
    """Prices an order by asking the quote service."""

    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        reply = None
        for _ in range(20):  # the quote service may still be subscribing: retry briefly
            reply = await self.hub.messaging.request(SUBJECT, payload=task.payload, timeout=5)
            if reply.success or "no responders" not in reply.error_message:
                break
            await asyncio.sleep(0.25)
        if reply is None or not reply.success:
            message = reply.error_message if reply else "no reply"
            return TaskResult(task_id=task.task_id, success=False, error_message=message)
        quote = json.loads(reply.payload)
        if "error" in quote:
            return TaskResult(task_id=task.task_id, success=False, error_message=quote["error"])
        return TaskResult(task_id=task.task_id, success=True, result=reply.payload)


async def main() -> None:
    hub_url = os.getenv("HUB_URL", "localhost:50051")
    secret = {"secret": os.getenv("AGENT_SECRET", "")}  # as in the guide
    quotes = QuoteService(
        AgentConfig(
            agent_id="quote_service",
            agent_name="Quote Service",
            hub_url=hub_url,
            capabilities={"task_types": "none"},
            metadata=secret,
        )
    )
    orders = OrderAgent(
        AgentConfig(
            agent_id="order_agent",
            agent_name="Order Agent",
            hub_url=hub_url,
            capabilities={"task_types": "order"},
            metadata=secret,
        )
    )
    # Two agents in one process: start both, stop both on SIGINT/SIGTERM.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with quotes, orders:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
