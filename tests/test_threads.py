"""The torch thread count of ``hersr demo``, ``hersr bench`` and ``basicsr train|test``: the idle cores
of the affinity mask, unless ``--threads`` or ``OMP_NUM_THREADS`` say otherwise."""

import pytest

from hersr_arch.threads import choose_threads


@pytest.mark.parametrize(
    ("cores", "machine_cores", "load", "expected"),
    [
        (2, 2, 0.1, 2),  # an idle 2-core machine: both
        (2, 2, 2.0, 1),  # two other busy processes: one thread, never zero
        (2, 2, 5.0, 1),
        (2, 2, 1.2, 1),  # one busy process
        (8, 8, 2.4, 6),
        (4, 16, 8.0, 2),  # a 4-core mask on a 16-core machine half loaded: half of our cores busy
        (4, 16, 0.0, 4),
        (1, 64, 30.0, 1),
    ],
)
def test_idle_cores_of_the_affinity_mask(cores, machine_cores, load, expected):
    threads, why = choose_threads(environ={}, cores=cores, machine_cores=machine_cores, load=load)
    assert threads == expected
    assert f"{cores} usable cores" in why and f"load {load:.2f}" in why


def test_overrides_win_over_the_load():
    assert choose_threads(3, environ={"OMP_NUM_THREADS": "1"}, cores=2, load=5.0) == (3, "3 (--threads)")
    assert choose_threads(environ={"OMP_NUM_THREADS": "4"}, cores=2, load=5.0) == (4, "4 (OMP_NUM_THREADS)")
    assert choose_threads(environ={"OMP_NUM_THREADS": ""}, cores=2, machine_cores=2, load=0.0)[0] == 2


@pytest.mark.parametrize(("requested", "env"), [(0, {}), (None, {"OMP_NUM_THREADS": "two"}), (None, {"OMP_NUM_THREADS": "0"})])
def test_bad_overrides_are_refused(requested, env):
    with pytest.raises(ValueError, match="--threads must be >= 1|is not a positive integer"):
        choose_threads(requested, environ=env, cores=2, load=0.0)
