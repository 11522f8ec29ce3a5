"""Search attributes that let an operator find turns in the Temporal web UI (tenant, conversation,
model) and canary rollouts (the canary, the rollout's state and its share now)."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey, SearchAttributePair

TENANT = SearchAttributeKey.for_keyword("TurnflowTenant")
CONVERSATION = SearchAttributeKey.for_keyword("TurnflowConversation")
MODEL = SearchAttributeKey.for_keyword("TurnflowModel")
CANARY = SearchAttributeKey.for_keyword("TurnflowCanary")
ROLLOUT_STATE = SearchAttributeKey.for_keyword("TurnflowRolloutState")
ROLLOUT_SHARE = SearchAttributeKey.for_keyword("TurnflowRolloutShare")
ALL = (TENANT, CONVERSATION, MODEL, CANARY, ROLLOUT_STATE, ROLLOUT_SHARE)


def turn_attributes(
    tenant_id: str, conversation_id: str, model: str | None = None
) -> list[SearchAttributePair[str]]:
    """At start the model is known only when the request names one; routing sets it after."""
    pairs = [SearchAttributePair(TENANT, tenant_id), SearchAttributePair(CONVERSATION, conversation_id)]
    if model:
        pairs.append(SearchAttributePair(MODEL, model))
    return pairs
