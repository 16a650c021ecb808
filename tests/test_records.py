import datetime

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hpod.records import COLUMNS, export_text, log_line, trial_row

DESIGN_LINE = (
    "Trial 12: d_model=512, n_layers=8, n_heads=8, d_ff=2048, params=25,321,473, batch=64x4, "
    "learning_rate=3.1e-04, weight_decay=1.2e-03, warmup_steps=200, dropout=0.21, epochs=37/75, "
    "state=COMPLETE, val_loss=0.3863"
)


def design_trial() -> optuna.trial.FrozenTrial:
    trial = optuna.trial.create_trial(
        state=TrialState.COMPLETE,
        value=0.38631,
        params={"arch": "d512-L8-h8-f2048", "learning_rate": 3.1e-4, "weight_decay": 1.2e-3,
                "warmup_steps": 200, "epochs": 75, "dropout": 0.21},
        distributions={"arch": CategoricalDistribution(["d512-L8-h8-f2048"]),
                       "learning_rate": FloatDistribution(1e-4, 1e-3, log=True),
                       "weight_decay": FloatDistribution(1e-4, 5e-3, log=True),
                       "warmup_steps": IntDistribution(100, 500, step=100),
                       "epochs": CategoricalDistribution([50, 75, 100]), "dropout": FloatDistribution(0.1, 0.3)},
        user_attrs={"d_model": 512, "n_layers": 8, "n_heads": 8, "d_ff": 2048, "param_count": 25_321_473,
                    "micro_batch": 64, "accumulation_steps": 4, "epochs_run": 37, "epochs_planned": 75,
                    "best_val_loss": 0.38631, "best_epoch": 27},
    )  # fmt: skip
    trial.number = 12
    trial.datetime_start = datetime.datetime(2026, 1, 1, 0, 0, 0)
    trial.datetime_complete = datetime.datetime(2026, 1, 1, 0, 13, 32)
    return trial


def test_the_log_line_is_the_one_in_the_design():
    assert log_line(design_trial()) == DESIGN_LINE


def test_a_failed_trial_logs_its_reason():
    trial = design_trial()
    trial.state, trial.value = TrialState.FAIL, None
    trial.set_user_attr("fail_reason", "Diverged: val loss became nan at epoch 3")
    trial.set_user_attr("best_val_loss", float("nan"))
    assert log_line(trial).endswith("state=FAIL, val_loss=nan, reason=Diverged: val loss became nan at epoch 3")


def test_export_rows_carry_the_architecture_and_what_was_used():
    row = trial_row(design_trial())
    assert list(row) == list(COLUMNS)
    assert row["n_heads"] == 8 and row["micro_batch"] == 64 and row["duration_s"] == 812.0
    header, line = export_text([design_trial()], "csv").splitlines()
    assert header.split(",") == list(COLUMNS)
    assert line.startswith("12,COMPLETE,d512-L8-h8-f2048,512,8,8,2048,25321473,64,4,")
