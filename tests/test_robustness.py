"""Worst case over attacks, eps sweeps and robustness curves, and the sanity checks on a real run: the
Fashion-MNIST CNN against FGSM, a PGD eps sweep and the Boundary Attack, behind bit-depth reduction
attacked with BPDA and without it (its gradient is zero: the masked evaluation the checks must flag)."""
from __future__ import annotations

import json

import pytest
import torch

from advlab.cli.main import main
from advlab.core.config import AttackSpec
from advlab.core.config_yaml import expand_sweeps
from advlab.run.robustness import attack_labels


def _rows(matrix: dict) -> dict[str, list]:
    return {r["attack"]: r["accuracy"] for r in matrix["rows"]}


def test_the_worst_case_is_at_or_below_every_attack_in_every_column(matrix_run):
    _, results = matrix_run
    rob = results["robustness"]
    labels = [c["label"] for c in rob["columns"]]
    assert labels[:3] == ["no defense", "bit-depth 2 bits, non-adaptive", "bit-depth 2 bits, adaptive"]
    assert "bit-depth 2 bits, worst setting" in labels and "bit-depth 2 bits, no BPDA, adaptive" in labels
    # one matrix per distinct (norm, eps) of the bounded attacks: fgsm 0.1 and the pgd sweep
    assert [(m["threat"]["norm"], m["threat"]["eps"]) for m in rob["matrices"]] == [("linf", 0.03), ("linf", 0.1),
                                                                                     ("linf", 0.3)]
    for matrix in rob["matrices"]:
        rows = _rows(matrix)
        assert list(rows) == ["fgsm", "pgd eps=0.03", "pgd eps=0.1", "pgd eps=0.3", "boundary", "worst case"]
        for j in range(len(labels)):
            singles = [rows[a][j] for a in rows if a != "worst case" and rows[a][j] is not None]
            assert rows["worst case"][j] <= min(singles)


def test_an_unbounded_attack_counts_only_within_each_threat_model(matrix_run):
    """The Boundary Attack fools every image at some distance; in a matrix it fools an image only where its
    l_inf distance is within the threat model's eps, so the worst case equals the per-image recomputation
    from the rows' samples and never falls to what 'fooled at any distance' would give."""
    _, results = matrix_run
    plain = {(a["method"], a["params"].get("eps")): a for a in results["attacks"] if a["setting"] == "plain model"}
    boundary = plain[("boundary", None)]
    assert boundary["success_rate"] > 0.9  # it fools nearly everything, far outside the small budgets
    clean = torch.tensor([s["clean_pred"] == s["label"] for s in boundary["samples"]])
    anywhere = clean.clone()
    for row in plain.values():
        anywhere &= torch.tensor([s["adv_pred"] == s["label"] for s in row["samples"]])
    worst_at = {}
    for matrix in results["robustness"]["matrices"]:
        eps = matrix["threat"]["eps"]
        right = clean.clone()
        for row in plain.values():
            fooled = torch.tensor([s["adv_pred"] != s["label"] and s["linf"] is not None and s["linf"] <= eps + 1e-6
                                   for s in row["samples"]])
            right &= ~fooled
        rows = _rows(matrix)
        worst_at[eps] = rows["worst case"][0]
        assert worst_at[eps] == pytest.approx(float(right.float().mean()))
        counted = {r["attack"]: r.get("counted") for r in matrix["rows"]}
        assert counted["boundary"] == "within eps" and counted[f"pgd eps={eps:g}"] == "all"
        assert counted["pgd eps=0.3"] == ("all" if eps == 0.3 else "within eps")
    assert worst_at[0.03] >= worst_at[0.1] >= worst_at[0.3]  # a larger budget never leaves more
    assert worst_at[0.03] > 0.3 and float(anywhere.float().mean()) == 0.0


def test_named_threat_models_replace_the_derived_ones(fashion, in_tmp, run_error, capsys):
    """`--threat` (repeatable) names the matrices; a minimal attack alone gets a matrix per named threat
    model, its accuracy there recomputed from its per-image distances."""
    args = ["attack", "--method", "boundary", "--model", "advlab.zoo.smallnets:fashion_cnn", "--weights",
            str(fashion.weights), "--mean", "0.5", "--std", "0.5", "--input-size", "28", "--data", "fashion-mnist",
            "-n", "16", "--max-queries", "200"]
    assert main([*args, "--threat", "l2:1.5", "--threat", "linf:8/255", "--out", "run"]) == 0
    results = json.loads((in_tmp / "run" / "results.json").read_text())
    matrices = results["robustness"]["matrices"]
    assert [(m["threat"]["norm"], m["threat"]["eps"]) for m in matrices] == [("l2", 1.5), ("linf", 8 / 255)]
    assert matrices[1]["threat"]["label"] == "linf eps 0.03137 (8/255)"
    samples = results["attacks"][0]["samples"]
    for matrix in matrices:
        norm, eps = matrix["threat"]["norm"], matrix["threat"]["eps"]
        right = [s["clean_pred"] == s["label"] and not (s["adv_pred"] != s["label"] and s[norm] <= eps + 1e-6)
                 for s in samples]
        assert _rows(matrix)["boundary"][0] == pytest.approx(sum(right) / len(right))
    assert _rows(matrices[0])["boundary"][0] > 1 - results["attacks"][0]["success_rate"]  # not 'any distance'
    assert "threat" in (in_tmp / "run" / "config.yaml").read_text()
    assert "Threat model: linf eps 0.03137 (8/255)" in (in_tmp / "run" / "index.html").read_text()
    capsys.readouterr()
    assert "--threat 'l3:1': norm must be one of linf, l2" in run_error(*args, "--threat", "l3:1")
    assert "write NORM:EPS" in run_error(*args, "--threat", "0.1")


def test_an_eps_list_gives_one_row_each_and_a_monotone_curve_for_sound_columns(matrix_run):
    _, results = matrix_run
    pgd_rows = [a for a in results["attacks"] if a["method"] == "pgd" and a["setting"] == "plain model"]
    assert [a["params"]["eps"] for a in pgd_rows] == [0.03, 0.1, 0.3]
    curves = {c["column"]: c for c in results["robustness"]["curves"] if c["kind"] == "eps"}
    for column in ("no defense", "bit-depth 2 bits, adaptive"):
        accuracy = [a for _, a in curves[column]["points"]]
        assert accuracy == sorted(accuracy, reverse=True) and accuracy[-1] < 0.1, (column, accuracy)
    minimal = [c for c in results["robustness"]["curves"] if c["kind"] == "minimal"]
    assert {c["column"] for c in minimal} >= {"no defense", "bit-depth 2 bits, adaptive"}
    for c in minimal:  # robust accuracy against the threshold never rises, and ends at the attack's own row
        accuracy = [a for _, a in c["points"]]
        assert accuracy == sorted(accuracy, reverse=True)


def test_bit_depth_without_bpda_is_flagged_and_the_bpda_evaluation_is_not(matrix_run):
    run, results = matrix_run
    flagged = {(w["check"], w["where"]) for w in results["warnings"]}
    masked = "bit-depth 2 bits, no BPDA, adaptive"
    assert ("masked-gradients", masked) in flagged and ("gradient-masking", masked) in flagged
    assert ("unbounded-attack", masked) in flagged
    assert all(where.startswith(masked) for _, where in flagged), flagged  # nothing on the sound columns
    html = (run / "index.html").read_text()
    assert 'class="warnbox"' in html and "Robust accuracy" in html and "worst case" in html
    assert html.count("<img") >= 2 and "accuracy against eps" in html


def test_sweeps_expand_in_order_and_labels_tell_the_rows_apart():
    specs = expand_sweeps([AttackSpec("pgd", params={"eps": ["2/255", 0.1], "steps": 5}),
                           AttackSpec("fgsm", params={"eps": 0.1})])
    assert [(s.method, s.params["eps"]) for s in specs] == [("pgd", 2 / 255), ("pgd", 0.1), ("fgsm", 0.1)]
    assert attack_labels(specs) == ["pgd eps=0.007843", "pgd eps=0.1", "fgsm"]
    twins = [AttackSpec("pgd", params={"eps": 0.1}), AttackSpec("pgd", params={"eps": 0.1})]
    assert attack_labels(twins) == ["pgd-0", "pgd-1"]


def test_a_sweep_from_the_command_line(fashion, in_tmp):
    assert main(["attack", "--method", "fgsm", "--model", "advlab.zoo.smallnets:fashion_cnn", "--weights",
                 str(fashion.weights), "--mean", "0.5", "--std", "0.5", "--input-size", "28", "--data",
                 "fashion-mnist", "-n", "20", "--set", "eps=[0.05, 0.2]", "--out", "run"]) == 0
    results = json.loads((in_tmp / "run" / "results.json").read_text())
    assert [a["params"]["eps"] for a in results["attacks"]] == [0.05, 0.2]
    assert results["robustness"]["curves"][0]["points"][0][0] == 0.05
    assert main(["attack", "--method", "pgd", "--model", "advlab.zoo.smallnets:fashion_cnn", "--weights",
                 str(fashion.weights), "--mean", "0.5", "--std", "0.5", "--input-size", "28", "--data",
                 "fashion-mnist", "-n", "20", "--eps", "2/255,8/255,0.1", "--steps", "3", "--out", "run2"]) == 0
    results = json.loads((in_tmp / "run2" / "results.json").read_text())
    assert [a["params"]["eps"] for a in results["attacks"]] == [2 / 255, 8 / 255, 0.1]


def test_export_writes_the_matrix_as_csv_markdown_and_latex(matrix_run, capsys):
    run, results = matrix_run
    rob = results["robustness"]
    worst = [_rows(m)["worst case"] for m in rob["matrices"]]
    assert main(["export", str(run), "--format", "csv"]) == 0
    rows = [line.split(",") for line in capsys.readouterr().out.splitlines()]
    assert rows[0][:3] == ["threat", "attack", "no defense"] and rows[1][:2] == ["linf eps 0.03", "clean"]
    worst_lines = [r for r in rows if r[1] == "worst case"]
    assert [r[0] for r in worst_lines] == ["linf eps 0.03", "linf eps 0.1", "linf eps 0.3"]
    assert [r[2] for r in worst_lines] == [f"{100 * w[0]:.1f}" for w in worst]
    assert main(["export", str(run), "--format", "markdown"]) == 0
    markdown = capsys.readouterr().out
    assert markdown.startswith("Robust accuracy (%), threat model linf eps 0.03 (*: counted only within eps)\n\n"
                               "| attack | no defense |")
    assert markdown.count("| attack |") == 3 and "| pgd eps=0.3 |" in markdown and "| pgd eps=0.3 * |" in markdown
    assert "| boundary * |" in markdown and "| boundary |" not in markdown
    out = run.parent / "matrix.tex"
    assert main(["export", str(run), "--format", "latex", "--out", str(out)]) == 0
    latex = out.read_text()
    assert latex.count(r"\begin{tabular}{l" + "r" * len(rob["columns"]) + "}") == 3 and r"\bottomrule" in latex


def test_export_and_compare_never_overwrite_a_file_without_force(matrix_run, tmp_path, run_error):
    """Issue 22, section 3: `export --out` and `compare --out` turned a user's 54 KB file into 58 bytes."""
    run, _ = matrix_run
    for argv in (["export", str(run), "--format", "csv"], ["compare", str(run), str(run)]):
        mine = tmp_path / f"{argv[0]}-mine.txt"
        mine.write_text("a file of the user's\n")
        assert f"--out {mine} already exists" in run_error(*argv, "--out", str(mine))
        assert mine.read_text() == "a file of the user's\n"  # untouched
        assert main([*argv, "--out", str(mine), "--force"]) == 0
        assert "worst case" in mine.read_text()
        assert "is a directory" in run_error(*argv, "--out", str(tmp_path))


def test_runs_lists_a_run_with_its_headline_numbers(matrix_run, capsys):
    run, results = matrix_run
    assert main(["runs", str(run.parent)]) == 0
    listing = capsys.readouterr().out
    line = next(line for line in listing.splitlines() if str(run) in line or line.startswith("…"))
    assert f"{100 * results['clean']['accuracy']:.1f}" in line and "bit-depth 2 bits" in line
    assert "linf eps 0.03" in line  # the threat model of the headline number


def test_compare_highlights_the_deltas_between_runs(matrix_run, tmp_path, run_error):
    import shutil

    run, _ = matrix_run
    other = tmp_path / "other"
    shutil.copytree(run, other)
    changed = json.loads((other / "results.json").read_text())
    worst = next(r for r in changed["robustness"]["matrices"][1]["rows"] if r["attack"] == "worst case")
    worst["accuracy"][0] += 0.1
    (other / "results.json").write_text(json.dumps(changed))
    assert main(["compare", str(run), str(other), "--out", str(tmp_path / "cmp.html")]) == 0
    html = (tmp_path / "cmp.html").read_text()
    assert '<span class="up">+10.0</span>' in html and html.count('class="down"') == 0
    assert html.count("<h2>Threat model linf eps") == 3
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "results.json").write_text(json.dumps({"name": "old", "attacks": []}))  # before schema versions
    assert "has results schema None; this advlab reads schema 1" in run_error("export", str(empty))
    no_matrix = {k: v for k, v in json.loads((run / "results.json").read_text()).items() if k != "robustness"}
    (empty / "results.json").write_text(json.dumps(no_matrix))  # a task without per-image verdicts
    assert "has no robustness matrix" in run_error("compare", str(run), str(empty), "--out", str(tmp_path / "x.html"))
    assert "has no robustness matrix" in run_error("export", str(empty))
