"""Random overrides against every chapter's parameters, through the CLI and through plain papermill: each input is
either refused before any compute, with one line naming the parameter, or accepted, and both ways in decide alike.
Never a traceback, never a result file from a refused input."""

import jupytext
import papermill
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alignkd import book, cli
from alignkd.chapters import validate_chapter
from alignkd.parameters import ParameterError, chapters

CHAPTERS = chapters()
SCALARS = st.one_of(st.integers(-3, 10**12), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                    st.text(max_size=12), st.none(), st.sampled_from(["ppo", "kto", "cpu", "cuda", "quick", "../x"]))
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=4))


@st.composite
def overrides(draw):
    """A chapter and a few overrides: its own parameters with random values, now and then a name it lacks."""
    name = draw(st.sampled_from(sorted(CHAPTERS)))
    parameters = sorted(CHAPTERS[name].parameters)
    keys = draw(st.lists(st.one_of(st.sampled_from(parameters), st.sampled_from(["n_trail", "betaa"])),
                         min_size=1, max_size=3, unique=True))
    return name, {key: draw(VALUES) for key in keys}


def _cli_decision(name, values, monkeypatch, capsys, tmp_path):
    """`alignkd run` with these overrides, the chapter's execution replaced by a recorder: (accepted, message)."""
    ran = []
    monkeypatch.setattr(book, "execute_chapter", lambda chapter, checked, output: ran.append(checked) or output)
    args = ["run", name, "--profile", "quick", "-o", str(tmp_path / "out.ipynb")]
    for key, value in values.items():
        args += ["-p", f"{key}={_yaml(value)}"]
    code = cli.main(args)
    err = capsys.readouterr().err.strip()
    assert code in (0, 2)
    if code == 2:
        assert len(err.splitlines()) >= 1 and err.startswith("alignkd: error:") and "Traceback" not in err
        assert ran == []
    return code == 0, err


def _yaml(value):
    import yaml

    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=overrides())
def test_the_cli_refuses_before_compute_or_accepts(case, monkeypatch, capsys, tmp_path):
    name, values = case
    monkeypatch.setenv("ALIGNKD_RESULTS", str(tmp_path / "results"))
    accepted, message = _cli_decision(name, values, monkeypatch, capsys, tmp_path)
    namespace = {n: p.default for n, p in CHAPTERS[name].parameters.items()} | {"profile": "quick"}
    try:  # the chapter's own first cell decides the same
        validate_chapter(name, namespace | values)
        in_notebook = True
    except ParameterError:
        in_notebook = False
    assert accepted == in_notebook, (values, message)
    if not accepted:
        assert any(f"'{key}'" in message or "profile" in message for key in values), message
    results = tmp_path / "results"
    assert not results.exists() or not [p for p in results.rglob("*") if p.is_file()]


def _first_cells(name, tmp_path):
    """The chapter up to its validation cell: what runs before any compute."""
    notebook = jupytext.read(CHAPTERS[name].path)
    last = next(i for i, cell in enumerate(notebook.cells) if "validate_chapter(" in cell.source)
    notebook.cells = notebook.cells[:last + 1]
    path = tmp_path / f"{name}.ipynb"
    jupytext.write(notebook, path)
    return path


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=overrides())
def test_plain_papermill_decides_as_the_cli(case, monkeypatch, capsys, tmp_path):
    name, values = case
    monkeypatch.setenv("ALIGNKD_RESULTS", str(tmp_path / "results"))
    accepted, _ = _cli_decision(name, values, monkeypatch, capsys, tmp_path)
    try:
        papermill.execute_notebook(str(_first_cells(name, tmp_path)), str(tmp_path / "run.ipynb"),
                                   kernel_name="python3", parameters={"profile": "quick", **values},
                                   progress_bar=False)
        ran = True
    except papermill.PapermillExecutionError as error:
        assert error.ename in ("ParameterError", "PreflightError"), (error.ename, error.evalue)
        ran = False
    assert ran == accepted, values
