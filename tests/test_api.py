"""The public API shape: method objects, one result type, the registry."""

import json

import numpy as np
import pytest

import dyadsim
import dyadsim.datasets
from dyadsim import DyadsimError, GradientResult

from conftest import make_case


def small_case():
    return make_case("mlp", "tanh", "mse", seed=3, depth=2)


def test_registry_names_and_classes():
    assert list(dyadsim.METHODS) == ["backprop", "euler", "ode", "spice"]
    for name, cls in dyadsim.METHODS.items():
        assert issubclass(cls, dyadsim.Method)
        assert cls.name == name
    assert dyadsim.METHODS["euler"] is dyadsim.Euler
    assert dyadsim.METHODS["spice"] is dyadsim.Spice


@pytest.mark.parametrize("name", ["backprop", "euler", "ode", "spice"])
def test_every_method_returns_a_gradient_result(name):
    c = small_case()
    m = dyadsim.get_method(name)
    r = m(c.net, c.x, c.y)
    assert isinstance(r, GradientResult)
    assert set(r.grads) == set(c.net.params)
    for k, v in r.grads.items():
        assert np.shape(v) == np.shape(c.net.params[k])
    # the loss every method reports is the batch loss of the forward pass
    assert r.loss == pytest.approx(c.net.loss_value(c.x, c.y), rel=1e-9)
    assert r.info["method"] == name and r.info["wall_s"] >= 0
    assert isinstance(r.label, str) and r.label


def test_subclasses_keep_their_fields():
    c = small_case()
    e = dyadsim.Euler(eta=1.0)(c.net, c.x, c.y)
    assert isinstance(e, dyadsim.RelaxResult) and e.steps == 2 * c.net.depth
    assert e.info["schedule"] == "wavefront" and e.schedule == "wavefront"
    p = dyadsim.Euler(eta=0.5)(c.net, c.x, c.y)
    assert p.schedule == "parallel" and p.info["steps"] == p.steps > 2 * c.net.depth
    o = dyadsim.ODE()(c.net, c.x, c.y)
    assert isinstance(o, dyadsim.ContinuousResult) and o.info["t_settle_tau"] == o.t_settle
    s = dyadsim.Spice()(c.net, c.x, c.y)
    assert isinstance(s, dyadsim.SpiceGradients) and s.info["analysis"] == "op"
    assert s.info["elements"] > 0


def test_thin_functions_still_work():
    c = small_case()
    g = dyadsim.backprop(c.net, c.x, c.y)
    assert isinstance(g, dyadsim.Gradients)
    assert isinstance(dyadsim.relax(c.net, c.x, c.y), GradientResult)
    assert isinstance(dyadsim.relax_continuous(c.net, c.x, c.y), GradientResult)


def test_get_method_forms():
    e = dyadsim.get_method("Euler", eta=0.5)
    assert isinstance(e, dyadsim.Euler) and e.options["eta"] == 0.5
    assert dyadsim.get_method(dyadsim.ODE).options["solver"] is None
    inst = dyadsim.Euler(eta=0.3)
    assert dyadsim.get_method(inst) is inst
    assert dyadsim.get_method(inst, eta=0.7).options["eta"] == 0.7
    assert inst.options["eta"] == 0.3  # replace() made a copy
    assert dyadsim.Euler(eta=0.5) == dyadsim.Euler(eta=0.5) != dyadsim.Euler(eta=0.6)


@pytest.mark.parametrize("make, match", [
    (lambda: dyadsim.get_method("adjoint"), "unknown method 'adjoint'"),
    (lambda: dyadsim.get_method(3), "got int"),
    (lambda: dyadsim.Euler(eta=2.5), "eta must be in"),
    (lambda: dyadsim.Euler(eta=0.5, schedule="wavefront"), "wavefront schedule needs eta = 1"),
    (lambda: dyadsim.Euler(schedule="async-ish"), "unknown schedule"),
    (lambda: dyadsim.Euler(bogus=1), "unknown or reserved option.*'bogus'"),
    (lambda: dyadsim.ODE(solver="Euler"), "unknown ODE solver"),
    (lambda: dyadsim.ODE(t_maxx=3), "'t_maxx'"),
    (lambda: dyadsim.Spice(analysis="ac"), "unknown analysis"),
    (lambda: dyadsim.Spice(dialect="bsim"), "unknown dialect"),
    (lambda: dyadsim.Backprop(dtype=np.int32), "dtype"),
])
def test_bad_method_options(make, match):
    with pytest.raises(DyadsimError, match=match):
        make()


def test_spice_dialect_device_runs():
    net = dyadsim.mlp("3-3-2", activation="tanh", loss="mse", seed=1)
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 3))
    y = np.random.default_rng(1).uniform(-0.3, 0.3, (2, 2))
    r = dyadsim.Spice(dialect="device")(net, x, y)
    assert r.info["dialect"] == "device"
    ref = dyadsim.backprop(net, x, y)
    assert dyadsim.compare(r.grads, ref).max_rel_error < 1e-5


def test_train_accepts_method_objects_and_reports_schedule():
    data = dyadsim.datasets.xor(n=64, seed=0)
    net = dyadsim.mlp("2-4-2", activation="tanh", loss="xent", seed=0)
    h1 = dyadsim.train(net.copy(), data, method="euler", epochs=2, progress=False)
    assert h1.config["schedule"] == "wavefront"
    h2 = dyadsim.train(net.copy(), data, method=dyadsim.Euler(eta=1.0, schedule="parallel"),
                       epochs=2, progress=False)
    assert h2.config["schedule"] == "parallel"
    h3 = dyadsim.train(net.copy(), data, method="backprop", epochs=2, progress=False)
    # exact at eta=1 in both schedules: the same trajectory as backprop
    np.testing.assert_allclose(h1.test_loss, h3.test_loss, rtol=1e-9)
    np.testing.assert_allclose(h2.test_loss, h3.test_loss, rtol=1e-9)
    with pytest.raises(DyadsimError, match="method object"):
        dyadsim.train(net.copy(), data, method=dyadsim.Euler(), relax_options={"tol": 1e-3},
                      epochs=1, progress=False)


def test_cli_compare_needs_two_methods(capsys):
    from dyadsim.cli import main

    assert main(["compare", "--net", "3-3-2", "--methods", "backprop"]) == 2
    assert "at least two methods" in capsys.readouterr().err


def test_cli_grad_json_is_valid_and_uses_registry(capsys):
    from dyadsim.cli import main

    assert main(["grad", "--net", "3-4-2", "--method", "euler", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["info"]["schedule"] == "wavefront" and out["info"]["steps"] == 4
    assert set(out["gradients"]) == {"W[input->h1]", "b[h1]", "W[h1->output]", "b[output]"}


@pytest.mark.parametrize("args", [["--batch", "-1"], ["--seed", "-1"], ["--batch", "0"]])
def test_cli_bad_ints(args, capsys):
    from dyadsim.cli import main

    assert main(["grad", "--net", "3-4-2", *args]) == 2
    assert "Invalid value" in capsys.readouterr().err


@pytest.mark.parametrize("cmd", [
    ["train", "--net", "64-4-10", "--epochs", "1", "--no-progress", "--out"],
    ["experiment", "steps", "--quick", "--no-progress", "--out"],
])
def test_cli_output_under_a_file_fails_before_work(cmd, tmp_path, capsys):
    from dyadsim.cli import main

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(cmd + [str(blocker / "sub")]) == 2
    err = capsys.readouterr().err
    assert "cannot write to" in err and "Traceback" not in err


def test_mlp_refuses_huge_sizes_before_allocating():
    with pytest.raises(DyadsimError, match="parameters.*MAX_PARAMS"):
        dyadsim.mlp("100000000-100000000")


def test_train_argument_errors_are_dyadsim_errors(tmp_path):
    data = dyadsim.datasets.xor(n=32, seed=0)
    net = dyadsim.mlp("2-3-2", loss="xent", seed=0)
    blocker = tmp_path / "f"
    blocker.write_text("")
    for kw, match in [({"foo": 1}, "unexpected keyword argument 'foo'"),
                      ({"progress": "yes"}, "progress must be True or False"),
                      ({"checkpoint_dir": blocker / "x"}, "cannot create checkpoint_dir")]:
        with pytest.raises(DyadsimError, match=match):
            dyadsim.train(net.copy(), data, epochs=1, **{"progress": False, **kw})


def test_cli_montecarlo_csv_checked_before_runs_and_all_failed_is_an_error(tmp_path, capsys):
    from dyadsim.cli import main

    blocker = tmp_path / "f"
    blocker.write_text("")
    args = ["montecarlo", "--net", "3-3-2", "--runs", "2", "--workers", "1", "--no-progress"]
    assert main(args + ["--csv", str(blocker / "mc.csv")]) == 2
    assert "cannot write to" in capsys.readouterr().err
    # op-amp gain exists only in the device dialect: every run fails for a set-up reason
    status = main(args + ["--amp-gain", "1e4", "--json"])
    captured = capsys.readouterr()
    assert status != 0 and "all 2 Monte Carlo runs failed" in captured.err
    json.loads(captured.out)  # the JSON summary is still printed, and valid


def test_dead_scheduler_is_a_clear_error(monkeypatch):
    from dyadsim.montecarlo import Mismatch, monte_carlo
    from dyadsim.montecarlo import _engine

    monkeypatch.setattr(_engine._Engine, "connect_timeout", 1.0)
    net = dyadsim.mlp("3-3-2", seed=0)
    with pytest.raises(DyadsimError, match="cannot reach the Dask scheduler"):
        monte_carlo(net, np.ones((1, 3)), np.zeros((1, 2)), nonidealities=[Mismatch(0.01)],
                    runs=2, scheduler="tcp://127.0.0.1:1", progress=False)
