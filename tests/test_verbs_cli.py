from __future__ import annotations

import pytest

from zreward.cli import VERBS, main


def test_top_level_help_lists_every_verb(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for verb in VERBS:
        assert f"  {verb} " in out


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_every_verb_has_help(verb, capsys):
    try:
        rc = main([verb, "--help"])
    except SystemExit as e:  # argparse exits 0 after printing help
        rc = e.code
    assert rc in (0, None)
    out = capsys.readouterr().out
    assert "usage" in out.lower() and len(out) > 80


def test_unknown_verb_fails_with_usage(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown verb 'frobnicate'" in capsys.readouterr().err
