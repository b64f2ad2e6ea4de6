"""The user preference vector: a recency-weighted, signed average of item vectors.

With decay rate ``λ = ln 2 / half_life``, the preference after events ``(wᵢ, vᵢ, tᵢ)`` is
``Σ wᵢ e^{-λ(T - tᵢ)} vᵢ`` for the latest time ``T``; its direction is what retrieval uses, so
dislikes (negative ``wᵢ``) push it away from their items. Storing the sum relative to ``T``
makes each update O(1) and independent of arrival order, and replaying the stored events
reproduces the online value (``appliance users rebuild``).
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from appliance.domain import PreferenceState

_SECONDS_PER_DAY = 86_400.0


def apply_event(
    state: PreferenceState,
    vector: npt.NDArray[np.floating] | None,
    weight: float,
    event_time: datetime,
    half_life_days: float,
) -> PreferenceState:
    """Return ``state`` with one more event folded in; ``state`` itself is left unchanged.

    Args:
        state: The user's state before the event.
        vector: The item's vector, or ``None`` when the item has none (the event still counts).
        weight: The event's signed weight.
        event_time: When the event happened.
        half_life_days: Age at which an event weighs half as much as a new one.

    Returns:
        The updated state.

    """
    now = datetime.now(UTC)
    updated = replace(
        state, feedback_count=state.feedback_count + 1, created_at=state.created_at or now
    )
    if vector is None or weight == 0.0:
        return updated
    t = event_time.timestamp()
    rate = math.log(2.0) / (half_life_days * _SECONDS_PER_DAY)
    total = (
        np.zeros(len(vector), dtype=np.float64)
        if state.vector_sum is None
        else np.array(state.vector_sum, dtype=np.float64)
    )
    weight_sum = state.weight_sum
    anchor = state.anchor
    if anchor is None or t > anchor:
        if anchor is not None:
            shrink = math.exp(-rate * (t - anchor))
            total *= shrink
            weight_sum *= shrink
        anchor, factor = t, 1.0
    else:
        factor = math.exp(-rate * (anchor - t))
    total += (factor * weight) * np.asarray(vector, dtype=np.float64)
    weight_sum += factor * abs(weight)
    return replace(
        updated, vector_sum=total, weight_sum=weight_sum, anchor=anchor, vector_updated_at=now
    )


def preference_direction(state: PreferenceState | None) -> npt.NDArray[np.float32] | None:
    """Return the unit vector of a user's taste, or ``None`` when there is no signal yet."""
    if state is None or state.vector_sum is None:
        return None
    total = np.asarray(state.vector_sum, dtype=np.float64)
    norm = float(np.linalg.norm(total))
    # Likes and dislikes of the same items can cancel out exactly: then there is no direction.
    if norm < 1e-9 * max(state.weight_sum, 1e-12):
        return None
    return (total / norm).astype(np.float32)
