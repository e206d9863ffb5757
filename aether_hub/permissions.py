"""Which message-bus subjects an agent may use (`MessagingService`).

An agent may publish to, request on and subscribe to:

- its own namespace, ``agents.<agent_id>.>`` (only when its id is one subject token: no
  ``.``, ``*``, ``>`` or whitespace, so no agent's namespace lies inside another's);
- the shared namespaces the Hub declares (``--shared-subjects``, config ``shared_subjects``;
  `DEFAULT_SHARED_SUBJECTS` when not set), patterns with NATS wildcards.

A subscription pattern is allowed when every subject it can match is allowed (``review.*``
inside ``review.>`` is; ``>`` or ``agents.*.inbox`` are not). Request/reply inboxes
(``_INBOX.…``, made by the Hub for each Request) are private to the requester: nobody may
subscribe to them, and publishing to one literal inbox subject is allowed (that is what a
responder's reply is; the inbox name is 128 random bits, known only to the request's
recipients). Anything beyond the allowance is PERMISSION_DENIED naming the field.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from aether_hub.bus import subject_error

__all__ = (
    "AGENT_NAMESPACE",
    "DEFAULT_SHARED_SUBJECTS",
    "INBOX_PREFIX",
    "SubjectPolicy",
    "pattern_within",
)

#: The first token of every agent's own namespace: ``agents.<agent_id>.>``.
AGENT_NAMESPACE: Final = "agents"
#: The first token of the reply subjects the Hub makes for Request.
INBOX_PREFIX: Final = "_INBOX"
#: Shared namespaces of a Hub that declares none: what the SDK guide's examples use
#: (``review.completed``, ``pricing.quote``) plus the general ``shared.>`` and ``events.>``.
DEFAULT_SHARED_SUBJECTS: Final[tuple[str, ...]] = (
    "shared.>",
    "events.>",
    "review.>",
    "pricing.>",
)


def pattern_within(pattern: str, allowed: str) -> bool:
    """Whether every subject `pattern` matches is matched by `allowed` (NATS wildcards)."""
    inner = pattern.split(".")
    outer = allowed.split(".")
    for index, token in enumerate(outer):
        if token == ">":
            return len(inner) > index
        if index >= len(inner):
            return False
        mine = inner[index]
        if mine == ">":
            return False
        if token != "*" and token != mine:
            return False
    return len(inner) == len(outer)


def _single_token(agent_id: str) -> bool:
    return bool(agent_id) and not any(ch in ".*>" or ch.isspace() for ch in agent_id)


class SubjectPolicy:
    """The subject allowance of agents: own namespace plus the shared patterns."""

    def __init__(self, shared: Iterable[str] = DEFAULT_SHARED_SUBJECTS) -> None:
        patterns = tuple(shared)
        for pattern in patterns:
            problem = subject_error(pattern, wildcards=True)
            if problem is not None:
                raise ValueError(f"shared subject {problem}")
            if pattern.split(".")[0] == INBOX_PREFIX:
                raise ValueError(f"shared subject {pattern!r}: reply inboxes cannot be shared")
        self.shared: tuple[str, ...] = patterns

    def allowance(self, agent_id: str) -> tuple[str, ...]:
        """The patterns `agent_id` may use."""
        own = (f"{AGENT_NAMESPACE}.{agent_id}.>",) if _single_token(agent_id) else ()
        return own + self.shared

    def _describe(self, agent_id: str) -> str:
        allowed: Sequence[str] = self.allowance(agent_id)
        listed = ", ".join(allowed) if allowed else "none"
        return (
            f"agent {agent_id!r} may use {listed} (its own namespace and the Hub's"
            " --shared-subjects)"
        )

    def check_publish(self, agent_id: str, field: str, subject: str) -> None:
        """PERMISSION_DENIED unless `agent_id` may publish (or request) on `subject`."""
        tokens = subject.split(".")
        if tokens[0] == INBOX_PREFIX:
            if field == "subject" and len(tokens) >= 2:
                return  # a reply to a Request
            raise GRPCError(
                Status.PERMISSION_DENIED,
                f"{field}: {subject!r} is a reply inbox; only the Hub makes those",
            )
        if any(pattern_within(subject, allowed) for allowed in self.allowance(agent_id)):
            return
        raise GRPCError(
            Status.PERMISSION_DENIED,
            f"{field}: {subject!r} is outside what {self._describe(agent_id)}",
        )

    def check_subscribe(self, agent_id: str, pattern: str) -> None:
        """PERMISSION_DENIED unless every subject `pattern` matches is allowed."""
        first = pattern.split(".")[0]
        if first == INBOX_PREFIX:
            raise GRPCError(
                Status.PERMISSION_DENIED,
                f"subject: {pattern!r}: reply inboxes are private to their requester",
            )
        if any(pattern_within(pattern, allowed) for allowed in self.allowance(agent_id)):
            return
        raise GRPCError(
            Status.PERMISSION_DENIED,
            f"subject: {pattern!r} reaches beyond what {self._describe(agent_id)}",
        )
