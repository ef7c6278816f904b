"""Chapter parameters: the grammar of the parameters cell, profile files, and the CLI's checks."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from alignkd import parameters as ch
from alignkd.chapters import validate_chapter
from alignkd.cli import main

ROOT = Path(__file__).resolve().parents[1]

CELL = textwrap.dedent('''\
    profile = "default"  # one of: quick, default, paper
    n_trials = 20  # >= 1; independent seeds per setting
    beta = 1.0  # > 0
    betas = [0.1, 0.5]  # each > 0, <= 10
    algorithm = "ppo"  # one of: ppo, grpo, dpo_on, dpo_off
    verbose = False  # print more
''')


@pytest.fixture
def parameters():
    return ch.parse_parameters(CELL)


def test_parse_types_specs_and_descriptions(parameters):
    assert list(parameters) == ["profile", "n_trials", "beta", "betas", "algorithm", "verbose"]
    assert parameters["n_trials"].conditions == ((">=", 1.0),)
    assert parameters["n_trials"].description == "independent seeds per setting"
    assert parameters["betas"].conditions == ((">", 0.0), ("<=", 10.0))
    assert parameters["algorithm"].choices == ("ppo", "grpo", "dpo_on", "dpo_off")
    assert parameters["verbose"].description == "print more" and not parameters["verbose"].conditions
    assert parameters["betas"].kind == "list[float]"


@pytest.mark.parametrize("name, value, message", [
    ("n_trials", 0, "'n_trials' = 0: must be >= 1"),
    ("n_trials", 2.5, "'n_trials' = 2.5: expected int"),
    ("n_trials", True, "expected int"),
    ("beta", -1.0, "must be > 0"),
    ("beta", "big", "expected float"),
    ("betas", [0.5, 0.0], "'betas' = 0.0: must be > 0"),
    ("betas", 0.5, "expected a list"),
    ("algorithm", "trpo", "must be one of ppo, grpo, dpo_on, dpo_off"),
])
def test_bad_values_name_the_parameter_and_the_rule(parameters, name, value, message):
    with pytest.raises(ch.ParameterError, match=message.replace("(", r"\(")) as error:
        parameters[name].check(value)
    assert "allowed:" in str(error.value)


def test_good_values_are_coerced(parameters):
    assert parameters["beta"].check(2) == 2.0 and isinstance(parameters["beta"].check(2), float)
    assert parameters["betas"].check([1, 2]) == [1.0, 2.0]


def test_a_default_that_breaks_its_own_spec_is_rejected():
    with pytest.raises(ch.ParameterError, match="'beta' = 0.0"):
        ch.parse_parameters("beta = 0.0  # > 0\n")
    with pytest.raises(ValueError, match="only `name = value` lines"):
        ch.parse_parameters("import os\n")


def test_every_chapter_parses_and_every_profile_checks():
    available = ch.chapters()
    assert "01_theory" in available
    for chapter in available.values():
        assert "profile" in chapter.parameters, f"{chapter.name} has no profile parameter"
        assert chapter.parameters["profile"].choices == ch.PROFILES
    everything = {need: lambda what: None for need in ch.NEEDS}  # a machine with a GPU and every weight
    for profile in ch.PROFILES:
        checked = ch.preflight(profile, missing=everything)
        assert set(checked) == set(available)
        assert all(values["profile"] == profile for values in checked.values())


def test_toc_lists_every_chapter_once():
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    listed = sorted(Path(f).name for f in files if f.startswith("book/chapters/"))
    assert listed == sorted(ch.chapters())


def test_find_chapter_by_number_stem_or_name():
    assert ch.find_chapter("1").name == "01_theory"
    assert ch.find_chapter("01_theory").name == "01_theory"
    assert ch.find_chapter("theory").name == "01_theory"
    with pytest.raises(ch.ParameterError, match="no chapter 'nope'"):
        ch.find_chapter("nope")


@pytest.mark.parametrize("override, message", [
    ("nope=1", "has no parameter 'nope'"),
    ("grid_points=2.5", "'grid_points' = 2.5: expected int"),
    ("grid_points=3", "'grid_points' = 3: must be >= 10"),
    ("betas=[0.5, -1]", "'betas' = -1.0: must be > 0"),
    ("profile=huge", "must be one of quick, default, paper"),
])
def test_cli_rejects_bad_overrides_before_running_and_writes_nothing(tmp_path, capsys, override, message):
    output = tmp_path / "out.ipynb"
    assert main(["run", "01", "--profile", "quick", "-p", override, "-o", str(output)]) == 2
    assert message in capsys.readouterr().err
    assert not output.exists()


def test_cli_lists_chapters_and_parameters():
    listing = subprocess.run([sys.executable, "-m", "alignkd", "list"], capture_output=True, text=True, check=True)
    assert "01_theory" in listing.stdout and "betas = [0.1, 0.7, 2.0]" in listing.stdout
    params = subprocess.run([sys.executable, "-m", "alignkd", "params", "01", "--profile", "quick"],
                            capture_output=True, text=True, check=True)
    assert "grid_points" in params.stdout and "int, >= 10" in params.stdout


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.md")), ids=lambda p: p.stem)
def test_the_jupytext_free_reader_sees_every_chapter_as_jupytext_does(path):
    """`read_myst` (what a machine without the notebook stack reads chapters with) against jupytext itself."""
    jupytext = pytest.importorskip("jupytext")
    notebook = jupytext.read(path)
    metadata, cells = ch.read_myst(path)
    assert metadata.get("alignkd") == notebook.metadata.get("alignkd")
    code = [(source, options.get("tags")) for kind, source, options in cells if kind == "code"]
    assert code == [(c.source, c.metadata.get("tags")) for c in notebook.cells if c.cell_type == "code"]
    titles = [line for kind, source, _ in cells if kind == "markdown" for line in source.splitlines()
              if line.startswith("# ")]
    assert titles == [line for c in notebook.cells if c.cell_type == "markdown" for line in c.source.splitlines()
                      if line.startswith("# ")]


def test_a_code_cell_left_open_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "99_open.md"
    path.write_text("# Title\n\n```{code-cell} ipython3\n:tags: [parameters]\nx = 1\n")
    with pytest.raises(ValueError, match="99_open.md: line 3: a code cell is not closed"):
        ch.read_myst(path)


def test_algorithm_choices_are_read_from_the_registries():
    from alignkd.lm.algorithms import ALGORITHMS as LM
    from alignkd.mog.algorithms import ALGORITHMS as MOG

    parsed = ch.parse_parameters('a = ["ppo"]  # each one of: <lm algorithms>; x\nb = "ppo"  # one of: <mog algorithms>\n')
    assert parsed["a"].choices == tuple(LM) and parsed["b"].choices == tuple(MOG)
    with pytest.raises(ValueError, match="'<lm algos>' is not a registry"):
        ch.parse_parameters('a = "ppo"  # one of: <lm algos>\n')
    assert ch.find_chapter("06_llm").parameters["algorithms"].choices == tuple(LM)
    assert ch.find_chapter("07_pad").parameters["algorithm"].choices == tuple(MOG)


def test_no_chapter_types_a_list_of_algorithm_names_by_hand():
    """A `one of:` list holding a registry's name must be the registry itself (`<lm algorithms>`), or the
    chapters drift from the library as they did (chapter 07 refused grpo_reward, which the library accepts)."""
    from alignkd.lm.algorithms import ALGORITHMS as LM
    from alignkd.mog.algorithms import ALGORITHMS as MOG

    names = set(LM) | set(MOG)
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.md")):
        for line in path.read_text().splitlines():
            spec = line.partition("#")[2].partition(";")[0]
            if "one of:" in spec:
                typed = {c.strip() for c in spec.partition("one of:")[2].split(",")}
                assert not typed & names, f"{path.name}: {line.strip()}"


# ---- what failed late before the grammar knew it (issue: every way in validates before compute)

def _chapter(cell):
    return ch.Chapter("99_probe", Path("probe.md"), "probe", ch.parse_parameters(cell))


def test_floats_are_finite():
    chapter = _chapter("beta = 1.0  # > 0; KL coefficient\nbetas = [0.5]  # each > 0\n")
    for bad in (float("inf"), float("nan"), -float("inf")):
        with pytest.raises(ch.ParameterError, match="parameter 'beta'.*finite"):
            chapter.check({"beta": bad})
    with pytest.raises(ch.ParameterError, match="parameter 'betas'.*finite"):
        chapter.check({"betas": [0.5, float("inf")]})


def test_list_entries_are_distinct():
    """`betas=[0.5, 0.5]` failed in pandas after 66 s of compute; `seeds=[0, 0]` computed for minutes."""
    chapter = _chapter("betas = [0.5, 1.0]  # each > 0\nseeds = [0, 1]  # seeds\n")
    with pytest.raises(ch.ParameterError, match=r"parameter 'betas' = \[0.5, 0.5\]: lists 0.5 twice"):
        chapter.check({"betas": [0.5, 0.5]})
    with pytest.raises(ch.ParameterError, match="parameter 'seeds'.*lists 0 twice"):
        chapter.check({"seeds": [0, 1, 0]})
    assert chapter.check({"betas": [0.5, 2.0]}) == {"betas": [0.5, 2.0]}
    assert "distinct" in chapter.parameters["betas"].allowed()


def test_a_bound_may_name_another_parameter():
    """`figure_trial < n_trials` was checked only by the notebook, after the CLI accepted it."""
    chapter = _chapter("n_trials = 20  # >= 1; trials\nfigure_trial = 0  # >= 0, < n_trials; drawn trial\n")
    assert chapter.check({"figure_trial": 19}) == {"figure_trial": 19}
    with pytest.raises(ch.ParameterError, match=r"parameter 'figure_trial' = 20: must be < n_trials \(= 20\)"):
        chapter.check({"figure_trial": 20})
    with pytest.raises(ch.ParameterError, match=r"'figure_trial' = 5: must be < n_trials \(= 3\)"):
        chapter.check({"n_trials": 3, "figure_trial": 5})
    with pytest.raises(ValueError, match="bounded by 'n_trial', which is no parameter"):
        ch.parse_parameters("figure_trial = 0  # >= 0, < n_trial\n")
    assert ch.find_chapter("02").parameters["figure_trial"].conditions == ((">=", 0.0), ("<", "n_trials"))


@pytest.mark.parametrize("text, message", [
    ("02_mog_setup:\n  n_trials: 3\n bad indent: [\n", r"bad\.yaml:3: not valid YAML"),
    ("- 02_mog_setup\n", "expected a mapping of chapter name to parameters, got a list"),
    ("02_mog_setup: [n_trials, 3]\n", "'02_mog_setup' must map parameter names to values"),
    ("02_mog_setup: n_trials\n", "'02_mog_setup' must map parameter names to values"),
    ("2: {n_trials: 3}\n", "chapter key 2 is not a chapter name"),
    ("02_mog_setup: {1: 3}\n", "'02_mog_setup' must map parameter names to values"),
])
def test_a_malformed_profile_names_its_file_and_line(tmp_path, text, message):
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ch.ParameterError, match=message):
        ch.profile_values("bad", tmp_path)


@pytest.mark.parametrize("profile", ["../../escaped", "quick/../default", "/tmp/x", "", 3])
def test_a_profile_is_a_name_in_params_never_a_path(profile):
    with pytest.raises(ch.ParameterError, match="not a path|unknown profile"):
        ch.check_profile_name(profile)
    with pytest.raises(ValueError, match="not a path"):
        from alignkd.cache import ResultStore

        ResultStore(profile)


def test_an_unwritable_results_folder_is_refused_before_compute(tmp_path, monkeypatch, capsys):
    """A read-only output folder failed at the first claims write, after the chapter ran."""
    blocker = tmp_path / "a file"
    blocker.write_text("")
    monkeypatch.setenv("ALIGNKD_RESULTS", str(blocker / "results"))
    assert main(["run", "01", "--profile", "quick", "-o", str(tmp_path / "out" / "01.ipynb")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not writable" in err and "a file/results/quick" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_an_override_that_is_not_yaml_is_one_line(capsys):
    assert main(["run", "02", "--profile", "quick", "-p", "betas=[0.5,"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("alignkd: error: parameter 'betas' = '[0.5,': not a YAML value") and "\n" not in err


def _namespace(chapter, **overrides):
    found = ch.find_chapter(chapter)
    return {"In": [], "Out": {}, "get_ipython": None, "_": None,
            **{name: p.default for name, p in found.parameters.items()}, "profile": "quick", **overrides}


@pytest.mark.parametrize("chapter, overrides, message", [
    ("02", {"n_trail": 3}, "chapter '02_mog_setup' has no parameter 'n_trail'"),
    ("01", {"loser_masses": [1.5]}, "parameter 'loser_masses'"),
    ("02", {"top_reward_threshold": 1.5}, "parameter 'top_reward_threshold' = 1.5: must be < 1"),
    ("02", {"seed": -1}, "parameter 'seed' = -1: must be >= 0"),
    ("02", {"figure_trial": 25}, "'figure_trial' = 25: must be < n_trials"),
    ("02", {"profile": "../../escaped"}, "not a path"),
    ("02", {"n_trials": "3"}, "parameter 'n_trials' = '3': expected int"),
    ("02", {"eval_samples": 50}, "parameter 'eval_samples' = 50: must be >= 100"),
    ("01", {"grid_points": 5}, "parameter 'grid_points' = 5: must be >= 10"),
    ("01", {"betas": []}, "parameter 'betas' = \\[\\]: expected a non-empty list"),
    ("01", {"reward_of_target": float("inf")}, "parameter 'reward_of_target' = inf: expected a finite number"),
    ("03", {"betas": [0.5, 0.5]}, "lists 0.5 twice"),
    ("06", {"seeds": [0, 0]}, "parameter 'seeds' = \\[0, 0\\]: lists 0 twice"),
    ("02", {"n_trials": 1000000000}, "parameter 'n_trials' = 1000000000: must be <= 2000"),
])
def test_a_chapter_refuses_in_its_own_first_cell(chapter, overrides, message, tmp_path, monkeypatch):
    """What plain papermill ran (at the default profile's scale, or recording claims from out-of-spec values)."""
    monkeypatch.setenv("ALIGNKD_RESULTS", str(tmp_path))
    with pytest.raises(ch.ParameterError, match=message):
        validate_chapter(ch.find_chapter(chapter).name, _namespace(chapter, **overrides))


def test_a_chapter_accepts_its_own_values(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNKD_RESULTS", str(tmp_path))
    checked = validate_chapter("02_mog_setup", _namespace("02", n_trials=5))
    assert checked["n_trials"] == 5 and checked["profile"] == "quick"


@pytest.mark.parametrize("parameters, message", [
    ({"n_trail": 3}, "has no parameter 'n_trail'"),
    ({"top_reward_threshold": 1.5}, "'top_reward_threshold' = 1.5: must be < 1"),
])
def test_plain_papermill_is_refused_before_compute(tmp_path, monkeypatch, parameters, message):
    """The README's second way in: before, `-p n_trail 3` only warned and ran chapter 02 at the default scale."""
    import jupytext
    import papermill

    monkeypatch.setenv("ALIGNKD_RESULTS", str(tmp_path / "results"))
    source = tmp_path / "02.ipynb"
    jupytext.write(jupytext.read(ch.find_chapter("02").path), source)
    with pytest.raises(papermill.PapermillExecutionError, match=message):
        papermill.execute_notebook(str(source), str(tmp_path / "out.ipynb"), kernel_name="python3",
                                   parameters={"profile": "quick", **parameters}, progress_bar=False)
    written = [p for p in (tmp_path / "results").rglob("*") if p.is_file()] if (tmp_path / "results").exists() else []
    assert written == []
