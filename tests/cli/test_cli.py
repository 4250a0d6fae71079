"""The command line: flags generated from the options dataclasses, one name per setting, a fast --help."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields

import pytest

from deltacd.cli import build_parser
from deltacd.config import DAMAGE_ALIASES, DetectOptions, field_docs


def _verb(name: str):
    return build_parser([name])._subparsers._group_actions[0].choices[name]  # noqa: SLF001 - argparse keeps them there


def _dests(parser) -> dict[str, list[str]]:
    return {a.dest: a.option_strings for a in parser._actions}  # noqa: SLF001


@pytest.mark.parametrize("verb", ["detect", "batch"])
def test_every_detect_option_is_a_flag_spelt_as_its_field(verb):
    dests = _dests(_verb(verb))
    for f in fields(DetectOptions):
        if f.name == "method_options":  # --option KEY=VALUE
            continue
        assert f"--{f.name.replace('_', '-')}" in dests[f.name], f.name
    assert "--min-area" in dests["min_area_m2"] and "--morphology" in dests["morphology_radius_px"]


def test_every_damage_option_and_shared_pair_setting_is_a_flag():
    from deltacd.damage.options import DETECT_KEYS, DamageOptions

    dests = _dests(_verb("damage"))
    for name in [*(f.name for f in fields(DamageOptions)), *DETECT_KEYS]:
        if name != "method_options":
            assert f"--{name.replace('_', '-')}" in dests[name], name
    for old, new in DAMAGE_ALIASES.items():
        assert f"--{old}" in dests[new]


def test_earlier_spellings_set_the_same_option():
    parser = build_parser()
    old = parser.parse_args(["damage", "a.tif", "b.tif", "-o", "x", "--buffer", "1", "--ring", "2"])
    new = parser.parse_args(["damage", "a.tif", "b.tif", "-o", "x", "--buffer-m", "1", "--ring-m", "2"])
    assert (old.buffer_m, old.ring_m) == (new.buffer_m, new.ring_m) == (1.0, 2.0)
    args = parser.parse_args(["detect", "a", "b", "-o", "x", "--min-area", "5", "--threshold", "auto",
                              "--model-resolution", "0.5", "--resolution", "10,20"])
    assert (args.min_area_m2, args.threshold, args.model_resolution, args.resolution) == (5.0, "auto", 0.5, (10.0, 20.0))
    args = parser.parse_args(["damage", "a", "b", "-o", "x", "--share-thresholds", "0.1,0.3,0.6"])
    assert args.share_thresholds == (0.1, 0.3, 0.6)
    left_out = parser.parse_args(["detect", "a", "b", "-o", "x"])
    assert all(getattr(left_out, f.name) is None for f in fields(DetectOptions) if f.name != "method_options")


def test_every_verb_takes_its_summary_and_description_from_its_docstring():
    from deltacd.cli import verb_help

    sub = build_parser([])._subparsers._group_actions[0]  # noqa: SLF001
    summaries = {a.dest: a.help for a in sub._choices_actions}  # noqa: SLF001
    assert summaries["detect"] == "detect changes between two images"
    for verb, parser in sub.choices.items():
        assert summaries[verb] and not summaries[verb].endswith("."), verb
        assert parser.description and "\n" not in parser.description, verb
    assert verb_help("``deltacd x``: do x.\n\nDo x\nwell.\n\nAPI: f.\n") == ("do x", "Do x well.")


def test_help_texts_are_the_field_docs_with_the_real_defaults():
    helps = {a.dest: a.help for a in _verb("detect")._actions}  # noqa: SLF001
    docs = field_docs(DetectOptions)
    assert "default 4" in helps["batch_size"] and "Tiles per batch" in docs["batch_size"]
    assert "default 12" in helps["min_area_m2"]
    assert "1024 for networks" in helps["tile_size"] and "default 512" not in helps["tile_size"]
    assert "--model" in helps["tta"]  # a field named in a doc is shown as its flag
    assert set(docs) == {f.name for f in fields(DetectOptions)}  # every field is documented


def test_bad_values_are_argument_errors_naming_the_flag(capsys):
    for argv in (["--threshold", "high"], ["--model-resolution", "fine"], ["--resolution", "1,2,3"]):
        with pytest.raises(SystemExit) as info:
            build_parser().parse_args(["detect", "a", "b", "-o", "x", *argv])
        err = capsys.readouterr().err
        assert info.value.code == 2 and argv[0] in err and err.count("\n") == 1, err


def test_help_imports_nothing_heavy():
    """``deltacd --help`` and ``deltacd VERB --help`` load neither numpy, GDAL, geopandas nor torch (0.1-0.25 s, not 2 s)."""
    code = (
        "import sys\n"
        "from deltacd.cli import main\n"
        "for argv in (['--help'], ['detect', '--help'], ['damage', '--help'], ['run', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('numpy', 'rasterio', 'geopandas', 'shapely', 'torch', 'matplotlib', 'scipy', 'yaml'))\n"
        "print('HEAVY', heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "HEAVY []"
