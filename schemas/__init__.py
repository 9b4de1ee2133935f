"""The event contract: what services publish, what the engine emits, prices, codec."""

from schemas.codec import call_codec, cost_codec, outcome_codec
from schemas.events import CONTRACT_VERSION, CostItem, ModelCall, Outcome
from schemas.outputs import Alert, CostPerOutcomeWindow, DeadLetter, LateEvent, WorkUnitAttribution
from schemas.pricing import PriceBook, PriceEntry, price_call

__all__ = [
    "CONTRACT_VERSION",
    "Alert",
    "CostItem",
    "CostPerOutcomeWindow",
    "DeadLetter",
    "LateEvent",
    "ModelCall",
    "Outcome",
    "PriceBook",
    "PriceEntry",
    "WorkUnitAttribution",
    "call_codec",
    "cost_codec",
    "outcome_codec",
    "price_call",
]
