"""What train and verify tell the user: a worse objective and dead ReLU units, a model whose
parameters do not reach the objective, an error met while training, an interpreted model."""
from __future__ import annotations

import json
from pathlib import Path

from .conftest import run_cli, solver_workbook

XS = [float(i) for i in range(1, 7)]


def _relu_workbook(path: Path) -> Path:
    rows: list[list[object]] = [[x, 2.0 * x + 1] for x in XS]
    rows[0] += [0.5]
    rows[1] += [0.1]
    f = {f"D{r}": f"=IF(A{r}*$C$1+$C$2<0,0,A{r}*$C$1+$C$2)" for r in range(1, 7)}
    f.update({f"E{r}": f"=(D{r}-B{r})^2" for r in range(1, 7)})
    f["F1"] = "=AVERAGE(E1:E6)"
    return solver_workbook(path, rows, f, "$C$1:$C$2", "$F$1")


def _row_workbook(path: Path, per_row: str) -> Path:
    rows: list[list[object]] = [[x, 2.0 * x + 1] for x in XS]
    rows[0] += [0.3]
    rows[1] += [0.7]
    f = {f"D{r}": "=" + per_row.replace("{r}", str(r)) for r in range(1, 7)}
    f["F1"] = "=AVERAGE(D1:D6)"
    for r, (g, h) in enumerate([(1.0, 2.0), (2.0, 3.5), (3.0, 5.0), (4.0, 9.0)], start=1):
        f[f"G{r}"], f[f"H{r}"] = f"={g}", f"={h}"
    return solver_workbook(path, rows, f, "$C$1:$C$2", "$F$1")


def test_a_worse_objective_and_dead_relu_units_are_reported(tmp_path):
    src = _relu_workbook(tmp_path / "relu.xlsx")
    rc, out, err = run_cli("train", str(src), "--lr", "1", "--steps", "50", "-o", str(tmp_path / "a.xlsx"), "--json")
    assert rc == 0, err
    info = json.loads(out)
    assert info["got_worse"] and info["final_loss"] > info["start_loss"]
    assert info["relu_units"] == 1 and info["inactive_relu_units"] == ["model!D1:D6"]
    hint = next(w for w in info["warnings"] if "got worse" in w)
    assert "1 of 1 ReLU units are inactive on every row (model!D1:D6)" in hint and "--lr (e.g. 0.1)" in hint
    rc, out, err = run_cli("train", str(src), "--lr", "1", "--steps", "50", "-o", str(tmp_path / "b.xlsx"))
    assert rc == 0 and "xl2nn: warning: the objective got worse: 44.385 at the start" in err
    # A rate that works: better, no warning, the unit alive.
    rc, out, err = run_cli("train", str(src), "--lr", "0.001", "--steps", "50", "-o", str(tmp_path / "c.xlsx"),
                           "--json")
    info = json.loads(out)
    assert rc == 0 and not info["got_worse"] and info["final_loss"] < info["start_loss"]
    assert info["inactive_relu_units"] == [] and not any("worse" in w for w in info["warnings"])


def test_parameters_reached_through_offset_train(tmp_path):
    # OFFSET's target is worked out from its position arguments: the graph sees that it lands
    # on C1:C2, so the gradient reaches them (a gather).
    src = _row_workbook(tmp_path / "offset.xlsx", "(OFFSET($C$5,-4,0)*A{r}+OFFSET($C$5,-3,0)-B{r})^2")
    rc, out, err = run_cli("train", str(src), "--lr", "0.01", "--steps", "50", "-o", str(tmp_path / "t.xlsx"),
                           "--json")
    assert rc == 0, err
    info = json.loads(out)
    assert info["final_loss"] < info["start_loss"] and info["interpreted"] == ""
    rc, out, err = run_cli("verify", str(src))
    assert rc == 0 and "2 parameters at 3 weight points" in out, out + err


def test_parameters_reached_only_through_a_volatile_snapshot_are_refused(tmp_path):
    # RAND in a formula keeps its cells at their cached values: what they read is not followed.
    src = _row_workbook(tmp_path / "offset.xlsx", "(OFFSET($C$5,-4+0*RAND(),0)*A{r}+OFFSET($C$5,-3,0)-B{r})^2")
    for command in ("train", "verify", "export"):
        extra = ["-o", str(tmp_path / "x.py")] if command == "export" else []
        rc, out, err = run_cli(command, str(src), *extra)
        assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert "the parameters do not reach the objective model!F1" in err and "RAND in model!D1:D6" in err
        # verify reports what it checked (the values) and says the model was not checked
        assert out == "" if command != "verify" else out.rstrip().endswith("verify: incomplete: 1 model not checked")


def test_an_error_met_while_training_is_named(tmp_path):
    # VLOOKUP below its table's first key is #N/A: at lr 0.1 the second step gets there.
    src = _row_workbook(tmp_path / "vlookup.xlsx", "(VLOOKUP(A{r}*$C$1+1,$G$1:$H$4,2,TRUE)+$C$1*A{r}+$C$2-B{r})^2")
    rc, out, err = run_cli("train", str(src), "-o", str(tmp_path / "v.xlsx"))
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    # Said when it is met: no gradient (a constant error value) or a non-finite objective.
    assert ("the objective model!F1 is #N/A at step 2" in err and "it comes from model!D1 (=(VLOOKUP(" in err) or \
        ("became nan at step 2" in err and "the sheet gives #N/A there, from model!D1 (=(VLOOKUP(" in err), err
    assert "try a smaller --lr" in err
    assert not (tmp_path / "v.xlsx").exists()


def test_an_interpreted_model_says_so_and_trains(tmp_path):
    # Text cut with LEFT has no torch form: the interpreter runs it, exactly, and says so.
    src = _row_workbook(tmp_path / "text.xlsx", '(VALUE(LEFT(TEXT(A{r}*$C$1,"0.000"),3))+$C$1*A{r}+$C$2-B{r})^2')
    rc, out, err = run_cli("train", str(src), "--lr", "0.01", "--steps", "20", "-o", str(tmp_path / "t.xlsx"),
                           "--json")
    assert rc == 0, err
    info = json.loads(out)
    assert info["interpreted"].startswith("model!D1:D6 (=(VALUE(LEFT(TEXT(A1*$C$1")
    assert "has no torch form for parameter-dependent values" in info["interpreted"]
    assert info["program"] == "mixed"       # D1:D6 interpreted, the mean over it traced
    rc, out, err = run_cli("verify", str(src), "--json")
    report = json.loads(out)["models"][0]
    trace = report["trace"]
    assert trace["mode"] == "mixed" and not trace["traced"] and "no torch form" in trace["reason"]
    assert trace["ok"] and trace["points"] == 4 and trace["max_rel"] == 0.0
    assert report["gradients"]["points"] == 3


def test_rounding_by_formatting_traces(tmp_path):
    """VALUE(TEXT(x,"0.0")) is piecewise constant: traced, equal to the sheet's text path."""
    from xl2nn.api import compile_workbook
    from xl2nn.compiler.program import Program
    src = _row_workbook(tmp_path / "fmt.xlsx", '(VALUE(TEXT(A{r}*$C$1,"0.0"))+$C$1*A{r}+$C$2-B{r})^2')
    c = compile_workbook(src)
    program = Program(c.model)
    assert program.fallback == "" and program.check(points=8) == 0.0
    rc, out, err = run_cli("verify", str(src), "--json")
    assert rc == 0 and json.loads(out)["models"][0]["trace"]["traced"], err


def test_verify_checks_the_trace_and_gradients_at_several_points(tmp_path):
    src = _relu_workbook(tmp_path / "relu.xlsx")
    rc, out, err = run_cli("verify", str(src), "--json")
    assert rc == 0, err
    report = json.loads(out)["models"][0]
    assert report["trace"] == {"traced": True, "reason": "", "points": 4, "max_rel": 0.0, "mode": "traced",
                               "ok": True}
    assert report["gradients"]["points"] == 3
    assert sorted({c["point"] for c in report["gradients"]["checks"]}) == [0, 1, 2]
    rc, out, err = run_cli("verify", str(src))
    assert "  ok   traced program vs interpreter at 4 weight points  max rel 0\n" in out
    assert "2 parameters at 3 weight points" in out


def test_mixed_mode_interprets_only_the_family_without_a_torch_form(tmp_path):
    """A per-row layer, then a family with text functions, then more layers: only the text
    family runs in the interpreter; the runs before and after it are traced segments."""
    import torch

    from xl2nn.api import compile_workbook
    from xl2nn.compiler.program import Program
    rows: list[list[object]] = [[x, 2.0 * x + 1] for x in XS]
    rows[0] += [0.3]
    rows[1] += [0.7]
    f = {}
    for r in range(1, 7):
        f[f"D{r}"] = f"=IF(A{r}*$C$1+$C$2<0,0,A{r}*$C$1+$C$2)"            # traced
        f[f"E{r}"] = f'=VALUE(LEFT(TEXT(D{r}*$C$1,"0.000"),4))'           # interpreted
        f[f"G{r}"] = f"=(D{r}+E{r}-B{r})^2"                                 # traced
    f["F1"] = "=AVERAGE(G1:G6)"
    src = solver_workbook(tmp_path / "mixed.xlsx", rows, f, "$C$1:$C$2", "$F$1")
    c = compile_workbook(src)
    program = Program(c.model)
    assert program.mode == "mixed" and program.fallback.startswith("model!E1:E6 (=VALUE(LEFT(TEXT(")
    kinds = [("traced" if s.program is not None else "interpreted", [st.family.area for st in s.steps])
             for s in program.segments]
    assert [k for k, _ in kinds] == ["traced", "interpreted", "traced"]
    assert [str(a) for a in kinds[1][1]] == ["model!E1:E6"]
    for scale in (1.0, 0.5, -1.3, 2.0):
        with torch.no_grad():
            for w in c.model.weights.values():
                w.mul_(scale)
        got = program()
        (g_got,) = torch.autograd.grad(got, list(c.model.weights.values()))
        want = c.model()
        (g_want,) = torch.autograd.grad(want, list(c.model.weights.values()))
        # (the traced segments are rewritten, mse_loss for the squared errors: the same sums in
        # another order, so the last bit of a gradient may differ)
        assert float(got) == float(want)
        torch.testing.assert_close(g_got, g_want, rtol=1e-14, atol=0)
    rc, out, err = run_cli("train", str(src), "--lr", "0.01", "--steps", "30", "-o", str(tmp_path / "m.xlsx"))
    assert rc == 0 and "interpreted in part (exact; these cells slower, the rest traced): model!E1:E6" in out, err
