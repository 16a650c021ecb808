"""`hpod report`: the fitted law on synthetic trials, and the table, test loss and figure of real
tiny studies."""

from __future__ import annotations

import json
import shutil
import wsgiref.util

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from sklearn.metrics import roc_auc_score

from hpod.job import load_job, parse_job
from hpod.records import BASELINES, TEST_EVALUATION
from hpod.results.baselines import baseline_outputs
from hpod.results.evaluation import samples_path, write_samples
from hpod.results.report import Cell, cells, edge_warnings, laws
from hpod.storage import open_storage
from hpod.trial.data import data_shape, load_dataset
from hpod.trial.grid import build_grid
from tests.conftest import TINY_JOB
from tests.helpers import hpod

ALPHA, E, A = 0.25, 0.30, 2.0
BUDGETS = (50_000, 300_000, 1_500_000, 8_000_000, 50_000_000)
SAMPLES, SEEDS = 1000, 3


def synthetic_studies(
    state, budgets, losses_of=lambda n: E + A * n**-ALPHA, seed: int = 7, linear: float | None = None, test=None
) -> None:
    """Studies whose evaluation follows `losses_of(N)`: per-sample losses with a difficulty shared
    by all budgets, written where the evaluation writes them, with a constant baseline above (and
    a linear one at the level `linear`, when given); test losses are val's times `test(N)`."""
    rng = np.random.default_rng(seed)
    storage = open_storage(f"sqlite:///{state / 'optuna.db'}")
    shared = np.exp(0.5 * rng.normal(size=SAMPLES))
    shared /= shared.mean()
    for budget in budgets:
        study = optuna.create_study(study_name=f"synth-{budget}-h1", storage=storage)
        attrs = {"budget": budget, "horizon": 1, "job_name": "synth", "n_trials": 1, "job_text": ""}
        level = losses_of(budget)
        study.add_trial(
            optuna.trial.create_trial(
                params={"arch": "d64-L2-h2-f128"},
                distributions={"arch": CategoricalDistribution(("d64-L2-h2-f128",))},
                value=float(level),
                user_attrs={"param_count": budget, "d_model": 64, "n_layers": 2, "n_val": SAMPLES, "n_train": 10},
            )
        )
        runs = level * (shared * (1 + 0.3 * rng.normal(size=(1 + SEEDS, SAMPLES))) + 0.01 * rng.normal(size=(4, 1)))
        constant = np.full(SAMPLES, 0.6) * shared
        samples = {"val": runs, "test": runs * (1.0 if test is None else test(budget))}
        baselines = {"constant": samples_of(constant)}
        if linear is not None:
            baselines["linear"] = samples_of(linear * shared)
        write_samples(samples_path(state / "checkpoints", study.study_name), samples, baselines)
        attrs[TEST_EVALUATION] = {"trial": 0, "test_loss": float(runs[0].mean()), "seeds": SEEDS}
        attrs[BASELINES] = {"constant": {"val_loss": float(constant.mean()), "test_loss": float(constant.mean())}}
        for key, value in attrs.items():
            study.set_user_attr(key, value)


def samples_of(values):
    return {"val": values, "test": values}


def report_json(state, *args: str) -> dict:
    result = hpod(state, "report", "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_planted_law_over_five_budgets_is_called_a_law_with_an_interval_that_covers_it(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    synthetic_studies(state, BUDGETS)
    out = report_json(state, "--bootstrap", "300")
    [law] = out["fits"]
    assert law["budgets"] == 5 and law["verdict"] == "law", law
    low, high = law["bootstrap"]["alpha_95"]
    assert low <= ALPHA <= high and low < law["fit"]["alpha"] < high
    cell = out["cells"][0]
    val = cell["skill"]["val"]
    assert val["runs"] == SEEDS and val["loss_se"] > 0 and val["skill_constant"] > 2 * val["skill_constant_se"]


def test_flat_losses_are_no_scaling_detected_and_the_terminal_shows_no_bare_exponent(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    synthetic_studies(state, BUDGETS, losses_of=lambda n: 0.45)
    [law] = report_json(state, "--bootstrap", "300")["fits"]
    assert law["verdict"] == "no scaling detected" and "within 2 SE" in law["reason"], law
    table = hpod(state, "report")
    assert table.returncode == 0, table.stderr
    line = next(x for x in table.stdout.splitlines() if x.startswith("synth h1"))
    assert "no scaling detected" in line and "α =" not in line


def test_losses_that_do_not_beat_the_constant_predictor_are_marked_and_never_a_law(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    synthetic_studies(state, BUDGETS, losses_of=lambda n: 0.6 + 2.0 * n**-0.5)
    out = report_json(state, "--bootstrap", "300")
    [law] = out["fits"]
    assert law["verdict"] == "no scaling detected" and "no skill" in law["reason"]
    assert any("no skill over the constant predictor" in w for w in out["warnings"])


def test_a_model_beaten_by_a_good_linear_baseline_is_marked_and_the_verdict_says_so(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    synthetic_studies(state, BUDGETS, linear=E * 0.9)  # below every budget's loss
    out = report_json(state, "--bootstrap", "300")
    for c in out["cells"]:
        for split in ("val", "test"):
            measured = c["skill"][split]
            assert measured["strongest"] == "linear" and measured["skill"] < 0 and measured["skill_constant"] > 0
    assert sum("does not beat the linear baseline" in w for w in out["warnings"]) == len(BUDGETS)
    [law] = out["fits"]
    assert "no budget beats the linear baseline" in law["reason"]
    table = hpod(state, "report")
    rows = [line for line in table.stdout.splitlines() if line.lstrip().startswith(("50K", "300K", "1.5M"))]
    assert rows and all(line.count("*") == 2 and "linear" in line for line in rows), table.stdout
    assert "no budget beats the linear baseline" in " ".join(table.stdout.split())  # however it wraps


def test_skill_on_val_alone_is_no_skill_when_test_does_not_show_it(tmp_path):
    """A model chosen on val beats the constant there; on test its losses are the constant's."""
    state = tmp_path / "state"
    state.mkdir()
    synthetic_studies(state, BUDGETS, losses_of=lambda n: 0.5, test=lambda n: 0.6 / 0.5)
    out = report_json(state, "--bootstrap", "300")
    assert all(c["skill"]["val"]["skill_constant"] > 0.1 for c in out["cells"])
    assert sum("no skill over the constant predictor on test" in w for w in out["warnings"]) == len(BUDGETS)
    [law] = out["fits"]
    assert law["verdict"] == "no scaling detected" and "no skill" in law["reason"]


def test_the_law_is_fitted_on_test_losses_with_val_beside(tmp_path):
    """Val follows a law (as selection on val can make it seem to); test, untouched by selection,
    is flat: the verdict is test's, and val's exponent is shown beside it, not instead."""
    state = tmp_path / "state"
    state.mkdir()
    synthetic_studies(state, BUDGETS, test=lambda n: 0.40 / (E + A * n**-ALPHA))
    out = report_json(state, "--bootstrap", "300")
    [law] = out["fits"]
    assert law["split"] == "test" and law["verdict"] == "no scaling detected", law
    assert law["val_fit"]["alpha"] == pytest.approx(ALPHA, abs=0.1) and law["fit"]["alpha"] != law["val_fit"]["alpha"]
    line = " ".join(hpod(state, "report").stdout.split())
    assert "fitted to the seed runs' test losses" in line


def test_losses_without_per_sample_evaluation_that_rise_are_named_as_rising(tmp_path):
    """As the replaced system's imported table (h1 0.320 -> 0.361): no noise to judge, but the
    direction is said."""
    state = tmp_path / "state"
    state.mkdir()
    synthetic_studies(state, BUDGETS, losses_of=lambda n: 0.30 + 0.01 * np.log10(n))
    shutil.rmtree(state / "checkpoints")
    [law] = report_json(state)["fits"]
    assert law["verdict"] == "no scaling detected" and law["split"] == "val", law
    assert "the val loss rises from" in law["reason"] and "no per-sample losses" in law["reason"]


def test_with_two_budgets_the_report_declines_to_fit(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    synthetic_studies(state, BUDGETS[:2])
    [law] = report_json(state)["fits"]
    assert "fit" not in law and law["verdict"] == "no fit" and law["reason"].startswith("2 budget(s)")
    [law] = laws(cells(open_storage(f"sqlite:///{state / 'optuna.db'}")))
    assert law.verdict == "no fit"


def test_a_report_of_real_tiny_studies_has_its_table_test_loss_and_figure(tmp_path):
    state = tmp_path / "state"
    args = ("--budget", "20K,50K", "--horizon", "h1", "--job", str(TINY_JOB), "--trials", "2", "--max-epochs", "2")
    run = hpod(state, "run", *args)
    assert run.returncode == 0, run.stderr
    figure = tmp_path / "report.png"
    out = report_json(state, "--plot", str(figure))
    by_budget = {c["budget"]: c for c in out["cells"]}
    assert sorted(by_budget) == [20_000, 50_000]
    dataset = load_dataset(load_job(TINY_JOB).data, 1)
    linear = baseline_outputs(dataset)["linear"]
    labels = {split: dataset.targets[dataset.splits[split]].numpy() for split in linear}
    linear_auc = {split: roc_auc_score(labels[split], linear[split]) for split in linear}  # sklearn's, not hpod's
    for c in by_budget.values():
        assert c["counts"]["complete"] + c["counts"]["pruned"] == 2 and c["target"] == 2
        best = c["best"]
        assert best["val_loss"] > 0 and best["param_count"] > 0 and best["n_val"] >= 500
        assert c["test"]["trial"] == best["trial"] and c["test"]["test_loss"] > 0 and c["test"]["n_test"] > 0
        assert c["test"]["seeds"] == 2 and len(c["test"]["seed_val_losses"]) == 2  # tiny.yaml's final_seeds
        assert set(c["baselines"]) == {"constant", "linear", "trailing"}
        for split in ("val", "test"):
            measured = c["skill"][split]
            strongest = min(("constant", "linear", "trailing"), key=lambda name: measured[name])
            assert measured["strongest"] == strongest and measured["skill"] == measured[f"skill_{strongest}"]
            assert 0 < measured["auc"] < 1 and measured["auc_constant"] == 0.5
            assert measured["auc_linear"] == pytest.approx(linear_auc[split], abs=1e-3)
        assert c["train_labels_per_parameter"] == pytest.approx(best["n_train"] / best["param_count"])
        val = c["skill"]["val"]
        assert val["runs"] == 2 and val["constant"] == pytest.approx(c["baselines"]["constant"]["val_loss"], rel=1e-5)
        assert val["loss"] == pytest.approx(np.mean(c["test"]["seed_val_losses"]), rel=1e-5)
        assert val["skill_constant"] == pytest.approx(1 - val["loss"] / val["constant"])
    [law] = out["fits"]
    assert "fit" not in law and law["verdict"] == "no fit"

    import matplotlib.image

    pixels = matplotlib.image.imread(figure)
    assert pixels.shape[:2] == (550, 1300) and pixels.std() > 0.05  # not a blank canvas
    table = hpod(state, "report", "--bootstrap", "0")
    assert table.returncode == 0, table.stderr
    assert "20K" in table.stdout and "50K" in table.stdout and "no fit (2 budget(s)" in table.stdout
    assert "constant" in table.stdout and "skill" in table.stdout


def test_bad_report_input_is_one_line_and_exit_2(tmp_path):
    state = tmp_path / "state"
    empty = hpod(state, "report")
    assert empty.returncode == 2 and empty.stderr.strip() == f"Error: no studies yet in {state}"
    state.mkdir()
    synthetic_studies(state, BUDGETS[:1])
    wrong = hpod(state, "report", "--plot", str(tmp_path / "x.pdf"))
    assert wrong.returncode == 2 and "must end in .png" in wrong.stderr
    (tmp_path / "some_file").write_text("")
    blocked = hpod(state, "report", "--plot", str(tmp_path / "some_file" / "x.png"))
    assert blocked.returncode == 2 and blocked.stderr.startswith("Error: plot file") and blocked.stderr.count("\n") == 1
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


def test_grid_edge_warnings_fire_only_at_a_bound_of_the_jobs_grid_that_could_be_widened():
    spec = parse_job("", source="test")
    budget = 2_000_000
    grid = build_grid(spec.grid, data_shape(spec.data), budget)
    inner = max(grid, key=lambda e: e.arch.d_model)  # the slice's widest, short of grid.d_model's largest
    outer = min(grid, key=lambda e: e.arch.d_model)
    assert inner.arch.d_model < max(spec.grid.d_model) and outer.arch.d_model == min(spec.grid.d_model)

    def edges(entry):
        best = {"d_model": entry.arch.d_model, "n_layers": entry.arch.n_layers}
        counts = {"complete": 1, "pruned": 0, "failed": 0, "running": 0}
        return edge_warnings(Cell("j", budget, 1, "s", 1, counts, best, None, None, spec))

    assert not [w for w in edges(inner) if "d_model" in w]
    assert [w for w in edges(outer) if "d_model=64 is the smallest in grid.d_model" in w]
