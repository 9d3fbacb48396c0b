"""Model calls: backends behind one interface, the fallback chain, resilience and cost controls.

Public entry points:

- :class:`ModelService` runs a Polars frame of requests through the chain and returns
  it with :data:`MODEL_OUTPUT_SCHEMA` columns (see :func:`model_output_schema`);
- :func:`register_backend` adds a backend kind; :class:`Backend` is the protocol the
  service calls, :class:`ModelBackend` the base class that implements it;
- :func:`register_strategy` adds a routing strategy (:class:`RoutingStrategy`);
- :class:`CircuitBreaker`, :class:`ResponseCache`, :class:`BudgetTracker`,
  :class:`OutputTokenEstimator`, :class:`CallLedger` are the pieces, usable on their own.
"""

from __future__ import annotations

from driftline.models.base import BACKENDS, Backend, ModelBackend, build_backend, register_backend
from driftline.models.budget import BUDGET_EVENT_SCHEMA, BudgetEvent, BudgetTracker, budget_events_frame
from driftline.models.cache import CachedAnswer, ResponseCache, cache_key
from driftline.models.estimate import OutputTokenEstimator
from driftline.models.ledger import CallLedger
from driftline.models.pricing import call_cost
from driftline.models.prompts import OutputError, TaskSpec, parse_output
from driftline.models.neardup import NearDuplicateIndex
from driftline.models.ratelimit import TierGate
from driftline.models.resilience import CircuitBreaker, CircuitState
from driftline.models.routing import STRATEGIES, RoutingStrategy, register_strategy
from driftline.models.service import MODEL_OUTPUT_SCHEMA, ModelBatchResult, ModelService, model_output_schema
from driftline.models.types import ERROR_CLASSES, ModelRequest, ModelResult

# register the built-in backends
from driftline.models import local as _local, openai_compat as _openai, rules as _rules  # noqa: E402,F401  isort:skip

__all__ = [
    "BACKENDS",
    "Backend",
    "BUDGET_EVENT_SCHEMA",
    "ERROR_CLASSES",
    "MODEL_OUTPUT_SCHEMA",
    "BudgetEvent",
    "BudgetTracker",
    "CachedAnswer",
    "CallLedger",
    "CircuitBreaker",
    "CircuitState",
    "ModelBackend",
    "ModelBatchResult",
    "ModelRequest",
    "ModelResult",
    "ModelService",
    "NearDuplicateIndex",
    "OutputError",
    "OutputTokenEstimator",
    "ResponseCache",
    "RoutingStrategy",
    "STRATEGIES",
    "TaskSpec",
    "TierGate",
    "budget_events_frame",
    "build_backend",
    "cache_key",
    "call_cost",
    "model_output_schema",
    "parse_output",
    "register_backend",
    "register_strategy",
]
