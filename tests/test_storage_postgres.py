"""Optuna studies kept in a real PostgreSQL server (started by the suite: see tests/_postgres.py).

What a user of a shared RDB storage relies on: what one client records is in the database and a
new client (a fresh engine, or another process) sees it exactly; multi-objective studies keep
their directions and Pareto front; a trial left RUNNING by a crashed worker can be found and
failed by another client.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import optuna
import pytest
import sqlalchemy as sa
from optuna.study import StudyDirection
from optuna.trial import TrialState

pytestmark = pytest.mark.slow  # a PostgreSQL server


def _snapshot(trials):
    return [(t.number, t.state, t.values, t.params, t.user_attrs) for t in trials]


def test_the_storage_is_a_postgresql_server_reached_through_a_unix_socket(postgres_storage_url):
    engine = sa.create_engine(postgres_storage_url)
    try:
        with engine.connect() as conn:
            version, server_addr, listen = conn.execute(
                sa.text("SELECT version(), inet_server_addr(), current_setting('listen_addresses')")
            ).one()
    finally:
        engine.dispose()
    assert version.startswith("PostgreSQL ")
    assert server_addr is None  # NULL: this connection is not over TCP
    assert listen == ""  # and the server listens on no TCP address at all


def test_ask_and_tell_trials_survive_in_the_database(postgres_storage_url):
    url = postgres_storage_url
    study = optuna.create_study(study_name="persisted", storage=url, direction="minimize")
    values = [math.pi, 0.1, -1e-300, 2.5, math.inf]
    for value in values:
        trial = study.ask()
        x = trial.suggest_float("x", -10.0, 10.0)
        trial.suggest_categorical("kind", ["a", "b"])
        trial.set_user_attr("seed", trial.number * 7)
        study.tell(trial, value + 0.0 * x)
    pruned = study.ask()
    study.tell(pruned, state=TrialState.PRUNED)

    # A new client: its own engine and connections, nothing shared in memory.
    loaded = optuna.load_study(study_name="persisted", storage=url)
    assert loaded.direction == StudyDirection.MINIMIZE
    assert _snapshot(loaded.trials) == _snapshot(study.trials)
    assert [t.value for t in loaded.trials[:5]] == values  # doubles, ±inf, exactly
    assert loaded.trials[5].state == TrialState.PRUNED
    assert loaded.best_value == -1e-300
    assert loaded.best_trial.number == 2
    assert loaded.best_params == study.trials[2].params

    # The rows are really in the server, under Optuna's schema.
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            n_rows = conn.execute(
                sa.text(
                    "SELECT count(*) FROM trials JOIN studies USING (study_id)"
                    " WHERE studies.study_name = 'persisted'"
                )
            ).scalar_one()
    finally:
        engine.dispose()
    assert n_rows == 6

    # Both clients keep working on the same study: each sees the other's trials.
    trial = loaded.ask()
    loaded.tell(trial, -5.0)
    assert study.best_value == -5.0
    assert study.best_trial.number == 6 == trial.number
    assert "persisted" in optuna.get_all_study_names(storage=url)


def test_multi_objective_study_round_trips_its_pareto_front(postgres_storage_url):
    url = postgres_storage_url
    study = optuna.create_study(
        study_name="pareto", storage=url, directions=["maximize", "minimize"]
    )
    # (accuracy ↑, cost ↓). Non-dominated: 1, 2 and 4; 0 is beaten by 1, 3 by 1, 5 by 2.
    points = [(1.0, 5.0), (3.0, 4.0), (2.0, 1.0), (3.0, 6.0), (0.5, 0.5), (1.0, 2.0)]
    for point in points:
        trial = study.ask()
        trial.suggest_int("width", 1, 64)
        study.tell(trial, list(point))

    loaded = optuna.load_study(study_name="pareto", storage=url)
    assert loaded.directions == [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]
    front = sorted(loaded.best_trials, key=lambda t: t.number)
    assert [t.number for t in front] == [1, 2, 4]
    assert [tuple(t.values) for t in front] == [points[1], points[2], points[4]]
    assert [t.params for t in front] == [study.trials[n].params for n in (1, 2, 4)]
    with pytest.raises(RuntimeError):
        loaded.best_trial  # noqa: B018  (single-objective API on a multi-objective study)

    # A new dominating point, told through the loaded client, replaces most of the front.
    trial = loaded.ask()
    loaded.tell(trial, [4.0, 0.5])
    assert sorted(t.number for t in study.best_trials) == [6]


_CRASHING_WORKER = textwrap.dedent(
    """
    import os, sys
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="crashed", storage=sys.argv[1])
    done = study.ask()
    done.suggest_float("lr", 1e-4, 1e-1, log=True)
    study.tell(done, 0.25)
    trial = study.ask()
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    trial.set_user_attr("host", "worker-1")
    print(trial.number, flush=True)
    os._exit(3)  # killed mid-trial: no tell, no clean disconnect
    """
)


def test_a_running_trial_left_by_a_crashed_worker_can_be_failed_by_another_client(
    postgres_storage_url,
):
    url = postgres_storage_url
    worker = subprocess.run(
        [sys.executable, "-c", _CRASHING_WORKER, url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode == 3, worker.stderr
    orphan_number = int(worker.stdout.strip())

    recovery = optuna.load_study(study_name="crashed", storage=url)
    running = recovery.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    assert [t.number for t in running] == [orphan_number]
    assert running[0].user_attrs == {"host": "worker-1"}
    assert running[0].datetime_complete is None
    for trial in running:
        recovery.tell(trial.number, state=TrialState.FAIL)

    after = optuna.load_study(study_name="crashed", storage=url)
    orphan = after.trials[orphan_number]
    assert orphan.state == TrialState.FAIL
    assert orphan.datetime_complete is not None
    assert orphan.params == running[0].params  # what the worker had suggested is kept
    assert after.get_trials(states=(TrialState.RUNNING,)) == []
    assert after.best_value == 0.25  # a failed trial never counts

    # Work resumes where it stopped: numbering continues after the failed trial.
    trial = after.ask()
    after.tell(trial, 0.125)
    assert trial.number == orphan_number + 1
    assert recovery.best_trial.number == trial.number
