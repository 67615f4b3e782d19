"""The run records people read: metrics.csv and the curves with BSAM's diagnostics."""
import csv

from tasks.engine.records import DiagnosticsMeter, curves_figure, write_metrics_csv


def test_diagnostics_meter_means_and_conflict_fraction():
    meter = DiagnosticsMeter()
    for cos in (0.5, -0.25, 0.75, -0.5):
        meter.add({"grad_norm": 2.0, "perturbed_grad_norm": 3.0, "min_grad_norm": 1.0,
                   "cos_g0_g2": cos, "rho_min": 0.05})
    summary = meter.summary()
    assert summary["conflict_frac"] == 0.5
    assert summary["cos_g0_g2"] == 0.125
    assert summary["grad_norm"] == 2.0 and summary["rho_min"] == 0.05
    assert DiagnosticsMeter().summary() == {}


def test_diagnostics_meter_means_each_key_over_the_steps_that_report_it():
    """Between full steps (SAM.INTERVAL > 1) only g0's norm is reported."""
    meter = DiagnosticsMeter()
    for full in (1.0, 0.0, 0.0, 1.0):
        meter.add({"grad_norm": 2.0, "full_step": full,
                   **({"perturbed_grad_norm": 3.0, "cos_g0_g2": -0.5, "held_share": 0.2} if full
                      else {"reuse_factor": 3.5})})
    summary = meter.summary()
    assert summary["perturbed_grad_norm"] == 3.0 and summary["grad_norm"] == 2.0
    assert summary["full_step"] == 0.5 and summary["conflict_frac"] == 1.0
    assert summary["held_share"] == 0.2 and summary["reuse_factor"] == 3.5  # LookSAM's columns


def test_diagnostics_meter_continues_from_its_state():
    """A checkpoint taken in mid-epoch stores the meter's state; the resumed meter ends the
    epoch with the same means as one that was never stopped."""
    steps = [{"grad_norm": g, "cos_g0_g2": c} for g, c in ((1.0, 0.5), (3.0, -0.5), (2.0, 0.25))]
    whole, first = DiagnosticsMeter(), DiagnosticsMeter()
    for stats in steps:
        whole.add(stats)
    first.add(steps[0])
    resumed = DiagnosticsMeter(first.state())
    for stats in steps[1:]:
        resumed.add(stats)
    assert resumed.summary() == whole.summary() and first.summary()["grad_norm"] == 1.0


def test_curves_show_diagnostics_panels_only_when_logged():
    bsam = [{"epoch": e, "train_loss": 1.0 / (e + 1), "val_top1": 50.0 + e, "lr": 0.1,
             "rho_min": 0.05, "grad_norm": 1.0, "perturbed_grad_norm": 1.2,
             "min_grad_norm": 0.9, "cos_g0_g2": 0.3, "conflict_frac": 0.1} for e in range(3)]
    titles = [ax.get_title() for ax in curves_figure(bsam, "top1").axes]
    assert "gradient norms" in titles and "cos(g0, g2) / conflict fraction" in titles
    sgd = [{k: v for k, v in row.items() if k in ("epoch", "train_loss", "val_top1", "lr")}
           for row in bsam]
    titles = [ax.get_title() for ax in curves_figure(sgd, "top1").axes]
    assert titles == ["loss", "top1", "learning rate / rho_min"]


def test_metrics_csv_is_rewritten_whole(tmp_path):
    path = tmp_path / "metrics.csv"
    write_metrics_csv([{"epoch": 0, "train_loss": 1.0}], path)
    write_metrics_csv([{"epoch": 0, "train_loss": 1.0}, {"epoch": 1, "train_loss": 0.5, "val_top1": 70.0}], path)
    rows = list(csv.DictReader(path.open()))
    assert [r["epoch"] for r in rows] == ["0", "1"] and rows[1]["val_top1"] == "70.0"
