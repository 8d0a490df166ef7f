"""scaffold.threads: the example runs' CPU thread defaults."""

import pytest
import torch

from scaffold.threads import configure_threads, default_threads


@pytest.mark.parametrize("cores, load, expected", [
    (2, 0.0, 2),   # idle machine: every core
    (2, 0.7, 1),   # one core busy: one thread
    (2, 8.5, 1),   # oversubscribed: one thread, never zero
    (16, 3.2, 12),
    (4, 4.0, 1),
])
def test_default_threads_uses_the_idle_cores(cores, load, expected):
    assert default_threads(cores, load) == expected


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="cores"):
        default_threads(0, 0.0)
    with pytest.raises(ValueError, match="load"):
        default_threads(2, -1.0)
    with pytest.raises(ValueError, match="threads"):
        configure_threads(-2)


def test_an_explicit_thread_count_wins():
    before = torch.get_num_threads()
    try:
        assert configure_threads(1) == 1
        assert torch.get_num_threads() == 1
        chosen = configure_threads(None)
        assert chosen == torch.get_num_threads() >= 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("value, expected", [("3", 3), ("0", None), ("abc", None), ("", None),
                                             (" 2 ", 2), ("-1", None)])
def test_omp_num_threads_counts_as_a_choice_when_it_is_a_positive_count(monkeypatch, value,
                                                                        expected):
    from scaffold.threads import threads_from_environment

    monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert threads_from_environment() == expected
    before = torch.get_num_threads()
    try:
        chosen = configure_threads(None)
        assert chosen == torch.get_num_threads()
        if expected is not None:
            assert chosen == expected  # (the user's count, whatever the load average says)
    finally:
        torch.set_num_threads(before)
