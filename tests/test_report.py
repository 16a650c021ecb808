"""`hpod report`: the fitted law on synthetic trials, and the table, test loss and figure of real
tiny studies."""

from __future__ import annotations

import json
import wsgiref.util

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution

from hpod.report import cells, laws
from hpod.state import open_storage

from .conftest import TINY_JOB
from .helpers import hpod

ALPHA, E, A = 0.25, 0.30, 2.0
BUDGETS = (50_000, 300_000, 1_500_000, 8_000_000, 50_000_000)


def synthetic_studies(state, budgets, trials_per_budget: int = 6, seed: int = 7) -> None:
    """Studies whose best trials follow L = E + A·N^-α with 0.1% noise; the other trials are worse."""
    rng = np.random.default_rng(seed)
    storage = open_storage(f"sqlite:///{state / 'optuna.db'}")
    for budget in budgets:
        study = optuna.create_study(study_name=f"synth-{budget}-h1", storage=storage)
        for key, value in {"budget": budget, "horizon": 1, "job_name": "synth", "n_trials": trials_per_budget}.items():
            study.set_user_attr(key, value)
        for i in range(trials_per_budget):
            n = int(budget * rng.uniform(0.8, 1.2))
            law = E + A * n**-ALPHA
            loss = law * np.exp(rng.normal(0, 0.001)) if i == 0 else law + rng.uniform(0.005, 0.03)
            study.add_trial(
                optuna.trial.create_trial(
                    params={"arch": "d64-L2-h2-f128"},
                    distributions={"arch": CategoricalDistribution(("d64-L2-h2-f128",))},
                    value=float(loss),
                    user_attrs={"param_count": n, "d_model": 64, "n_layers": 2, "n_val": 1000},
                )
            )


def report_json(state, *args: str) -> dict:
    result = hpod(state, "report", "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_fit_recovers_a_known_exponent_and_its_interval_covers_it(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    synthetic_studies(state, BUDGETS)
    out = report_json(state, "--bootstrap", "100")
    [law] = out["fits"]
    assert law["budgets"] == 5 and law["note"] is None
    fit = law["fit"]
    assert abs(fit["alpha"] - ALPHA) / ALPHA <= 0.10, fit
    assert abs(fit["E"] - E) / E <= 0.05 and fit["converged"]
    low, high = law["bootstrap"]["alpha_95"]
    assert low <= ALPHA <= high and low < fit["alpha"] < high
    assert len(out["cells"]) == 5 and all(c["best"]["n_val"] == 1000 for c in out["cells"])


def test_with_two_budgets_the_report_declines_to_fit_and_with_three_says_no_freedom_is_left(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    synthetic_studies(state, BUDGETS[:2])
    [law] = report_json(state)["fits"]
    assert "fit" not in law and law["note"].startswith("no fit: 2 budget(s)")
    storage = open_storage(f"sqlite:///{state / 'optuna.db'}")
    synthetic_studies(tmp_path, BUDGETS[2:3])  # a second storage, copied in below
    optuna.copy_study(
        from_study_name=f"synth-{BUDGETS[2]}-h1",
        from_storage=open_storage(f"sqlite:///{tmp_path / 'optuna.db'}"),
        to_storage=storage,
    )
    [law] = laws(cells(storage), resamples=0)
    assert law.fit is not None and "no degrees of freedom left" in law.note


def test_a_report_of_real_tiny_studies_has_its_table_test_loss_and_figure(tmp_path):
    state = tmp_path / "state"
    args = ("--budget", "20K,50K", "--horizon", "h1", "--job", str(TINY_JOB), "--trials", "2", "--max-epochs", "2")
    run = hpod(state, "run", *args)
    assert run.returncode == 0, run.stderr
    figure = tmp_path / "report.png"
    out = report_json(state, "--plot", str(figure))
    by_budget = {c["budget"]: c for c in out["cells"]}
    assert sorted(by_budget) == [20_000, 50_000]
    for c in by_budget.values():
        assert c["counts"]["complete"] + c["counts"]["pruned"] == 2 and c["target"] == 2
        best = c["best"]
        assert best["val_loss"] > 0 and best["param_count"] > 0 and best["n_val"] >= 500
        assert c["test"]["trial"] == best["trial"] and c["test"]["test_loss"] > 0 and c["test"]["n_test"] > 0
    [law] = out["fits"]
    assert "fit" not in law and law["note"].startswith("no fit")

    import matplotlib.image

    pixels = matplotlib.image.imread(figure)
    assert pixels.shape[:2] == (550, 1300) and pixels.std() > 0.05  # not a blank canvas
    table = hpod(state, "report", "--bootstrap", "0")
    assert table.returncode == 0, table.stderr
    assert "20K" in table.stdout and "50K" in table.stdout and "no fit: 2 budget(s)" in table.stdout


def test_bad_report_input_is_one_line_and_exit_2(tmp_path):
    state = tmp_path / "state"
    empty = hpod(state, "report")
    assert empty.returncode == 2 and empty.stderr.strip() == f"Error: no studies yet in {state}"
    state.mkdir()
    synthetic_studies(state, BUDGETS[:1])
    wrong = hpod(state, "report", "--plot", str(tmp_path / "x.pdf"))
    assert wrong.returncode == 2 and "must end in .png" in wrong.stderr
    other = hpod(state, "report", "--job", "nope")
    assert other.returncode == 2 and other.stderr.strip() == "Error: no hpod studies of job 'nope' in the storage"


def test_optuna_dashboard_reads_the_default_storage(tmp_path):
    optuna_dashboard = pytest.importorskip("optuna_dashboard")
    synthetic_studies(tmp_path, BUDGETS[:2])
    app = optuna_dashboard.wsgi(f"sqlite:///{tmp_path / 'optuna.db'}")
    environ = {"PATH_INFO": "/api/studies", "REQUEST_METHOD": "GET"}
    wsgiref.util.setup_testing_defaults(environ)
    statuses = []
    body = b"".join(app(environ, lambda status, headers, exc_info=None: statuses.append((status, exc_info))))
    assert statuses == [("200 OK", None)], statuses
    names = {s["study_name"] for s in json.loads(body)["study_summaries"]}
    assert names == {f"synth-{b}-h1" for b in BUDGETS[:2]}
