import itertools
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt
import pytest

from appliance.domain import PreferenceState
from appliance.services.preferences import apply_event, preference_direction

HALF_LIFE_DAYS = 30.0
T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
DIM = 16


def _unit(seed: int) -> npt.NDArray[np.float32]:
    v = np.random.default_rng(seed).standard_normal(DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


def _basis(i: int) -> npt.NDArray[np.float32]:
    v = np.zeros(DIM, dtype=np.float32)
    v[i] = 1.0
    return v


Event = tuple[npt.NDArray[np.float32] | None, float, datetime]


def _fold(events: Sequence[Event], state: PreferenceState | None = None) -> PreferenceState:
    state = state or PreferenceState(user_id="u", vector_sum=None)
    for vector, weight, moment in events:
        state = apply_event(state, vector, weight, moment, HALF_LIFE_DAYS)
    return state


def _direction(state: PreferenceState) -> npt.NDArray[np.float32]:
    direction = preference_direction(state)
    assert direction is not None
    return direction


def test_order_of_events_does_not_matter() -> None:
    events: list[Event] = [
        (_unit(1), 1.0, T0),
        (_unit(2), -1.0, T0 + timedelta(days=3)),
        (_unit(3), 0.25, T0 - timedelta(days=40)),
        (_unit(4), 0.6, T0 + timedelta(days=100)),
        (_unit(5), -0.5, T0 + timedelta(hours=7)),
        (None, 1.0, T0 + timedelta(days=500)),  # an item without a vector moves nothing
        (_unit(6), 0.75, T0 - timedelta(days=2)),
    ]
    chronological = sorted(events, key=lambda e: e[2])
    reference = _fold(chronological)
    orders = [events, list(reversed(chronological)), [events[i] for i in (3, 0, 6, 2, 5, 1, 4)]]
    for order in orders:
        state = _fold(order)
        assert state.feedback_count == len(events)
        assert state.anchor == reference.anchor == (T0 + timedelta(days=100)).timestamp()
        assert state.weight_sum == pytest.approx(reference.weight_sum, rel=1e-9)
        np.testing.assert_allclose(state.vector_sum, reference.vector_sum, rtol=0, atol=1e-9)
        # The direction is float32: equal up to its last bit.
        np.testing.assert_allclose(_direction(state), _direction(reference), rtol=0, atol=1e-6)


def test_every_permutation_of_three_events_agrees() -> None:
    events: list[Event] = [
        (_unit(7), 1.0, T0 + timedelta(days=10)),
        (_unit(8), -0.5, T0),
        (_unit(9), 0.25, T0 + timedelta(days=5)),
    ]
    states = [_fold(list(order)) for order in itertools.permutations(events)]
    for state in states[1:]:
        np.testing.assert_allclose(state.vector_sum, states[0].vector_sum, rtol=0, atol=1e-9)
        assert state.weight_sum == pytest.approx(states[0].weight_sum, rel=1e-9)


def test_matches_the_closed_form() -> None:
    events: list[Event] = [
        (_unit(10), 1.0, T0),
        (_unit(11), -1.0, T0 + timedelta(days=12)),
        (_unit(12), 0.5, T0 - timedelta(days=70)),
    ]
    state = _fold(events)
    latest = max(e[2] for e in events)
    rate = math.log(2) / (HALF_LIFE_DAYS * 86_400)
    expected = sum(
        w * math.exp(-rate * (latest - t).total_seconds()) * v.astype(np.float64)
        for v, w, t in events
        if v is not None
    )
    np.testing.assert_allclose(state.vector_sum, expected, rtol=0, atol=1e-12)


def test_single_like_points_at_the_item() -> None:
    v = _unit(1)
    state = _fold([(v, 1.0, T0)])
    np.testing.assert_allclose(_direction(state), v, atol=1e-6)
    assert state.weight_sum == 1.0
    assert state.anchor == T0.timestamp()
    assert state.feedback_count == 1


def test_single_dislike_points_away_from_the_item() -> None:
    v = _unit(1)
    direction = _direction(_fold([(v, -1.0, T0)]))
    np.testing.assert_allclose(direction, -v, atol=1e-6)


def test_direction_is_unit_length_and_float32() -> None:
    direction = _direction(_fold([(_unit(1), 0.3, T0), (_unit(2), 0.2, T0)]))
    assert direction.dtype == np.float32
    assert float(np.linalg.norm(direction)) == pytest.approx(1.0, abs=1e-6)


def test_like_and_dislike_at_the_same_time_cancel_out() -> None:
    v = _unit(1)
    for order in ([(v, 1.0, T0), (v, -1.0, T0)], [(v, -1.0, T0), (v, 1.0, T0)]):
        state = _fold(order)
        assert preference_direction(state) is None
        assert state.feedback_count == 2
        assert state.weight_sum == 2.0


def test_a_later_dislike_outweighs_an_earlier_like() -> None:
    v = _unit(1)
    state = _fold([(v, 1.0, T0), (v, -1.0, T0 + timedelta(days=1))])
    np.testing.assert_allclose(_direction(state), -v, atol=1e-6)


def test_an_event_one_half_life_older_weighs_half() -> None:
    a, b = _basis(0), _basis(1)
    older = T0 - timedelta(days=HALF_LIFE_DAYS)
    for order in ([(a, 1.0, T0), (b, 1.0, older)], [(b, 1.0, older), (a, 1.0, T0)]):
        state = _fold(order)
        assert state.weight_sum == pytest.approx(1.5, rel=1e-12)
        assert state.vector_sum[0] == pytest.approx(1.0, rel=1e-12)
        assert state.vector_sum[1] == pytest.approx(0.5, rel=1e-12)


def test_half_weight_on_the_newer_event_balances_one_half_life() -> None:
    a, b = _basis(0), _basis(1)
    state = _fold([(a, 0.5, T0), (b, 1.0, T0 - timedelta(days=HALF_LIFE_DAYS))])
    expected = np.zeros(DIM, dtype=np.float32)
    expected[:2] = 1 / math.sqrt(2)
    np.testing.assert_allclose(_direction(state), expected, atol=1e-6)


def test_a_newer_event_shrinks_what_came_before() -> None:
    a = _basis(0)
    state = _fold([(a, 1.0, T0)])
    later = _fold([(a, 1.0, T0 + timedelta(days=2 * HALF_LIFE_DAYS))], state)
    assert later.anchor == (T0 + timedelta(days=2 * HALF_LIFE_DAYS)).timestamp()
    assert later.weight_sum == pytest.approx(1.25, rel=1e-12)
    assert later.vector_sum[0] == pytest.approx(1.25, rel=1e-12)


def test_event_without_vector_counts_but_leaves_the_vector() -> None:
    v = _unit(1)
    state = _fold([(v, 1.0, T0)])
    after = apply_event(state, None, 1.0, T0 + timedelta(days=5), HALF_LIFE_DAYS)
    assert after.feedback_count == 2
    np.testing.assert_array_equal(after.vector_sum, state.vector_sum)
    assert after.weight_sum == state.weight_sum
    assert after.anchor == state.anchor
    assert after.created_at == state.created_at


def test_first_event_without_vector_starts_a_profile_without_direction() -> None:
    state = _fold([(None, 1.0, T0)])
    assert state.feedback_count == 1
    assert state.vector_sum is None
    assert state.anchor is None
    assert state.created_at is not None
    assert preference_direction(state) is None


def test_zero_weight_counts_but_leaves_the_vector() -> None:
    state = _fold([(_unit(1), 1.0, T0)])
    after = apply_event(state, _unit(2), 0.0, T0 + timedelta(days=1), HALF_LIFE_DAYS)
    assert after.feedback_count == 2
    np.testing.assert_array_equal(after.vector_sum, state.vector_sum)
    assert after.anchor == state.anchor


def test_input_state_is_not_mutated() -> None:
    state = _fold([(_unit(1), 1.0, T0)])
    vector_before = np.array(state.vector_sum, copy=True)
    fields_before = (state.weight_sum, state.anchor, state.feedback_count, state.created_at)
    for moment in (T0 + timedelta(days=3), T0 - timedelta(days=3)):
        after = apply_event(state, _unit(2), -1.0, moment, HALF_LIFE_DAYS)
        assert after is not state
        assert after.vector_sum is not state.vector_sum
        np.testing.assert_array_equal(state.vector_sum, vector_before)
        assert (state.weight_sum, state.anchor, state.feedback_count, state.created_at) == (
            fields_before
        )
        assert after.feedback_count == state.feedback_count + 1


def test_no_state_has_no_direction() -> None:
    assert preference_direction(None) is None
    assert preference_direction(PreferenceState(user_id="u", vector_sum=None)) is None
