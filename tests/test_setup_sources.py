"""scripts/uv_sources.py: pip's package sources handed to uv (scripts/setup.sh), on hand-written `pip config list`
lines."""
import importlib.util
from pathlib import Path

_PATH = Path(__file__).resolve().parents[1] / "scripts" / "uv_sources.py"
_spec = importlib.util.spec_from_file_location("uv_sources", _PATH)
uv_sources = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(uv_sources)


def test_pip_sources_become_uv_flags(tmp_path):
    wheels, simple, cons = tmp_path / "wheels", tmp_path / "simple", tmp_path / "constraints.txt"
    wheels.mkdir()
    simple.mkdir()
    cons.write_text("torch<=2.14.1\n")
    lines = [
        ":env:.find-links='%s'" % wheels,
        ":env:.index-url='https://mirror.example/simple'",
        "global.index-url='https://other.example/simple'",
        "global.constraint='%s'" % cons,
        "global.extra-index-url='file://%s file:///no/such/dir/simple https://extra.example/simple'" % simple,
        "global.find-links='%s'" % wheels,  # the same source in env and file: passed once
        "global.cert='/etc/ssl/certs/ca-certificates.crt'",  # not a source: ignored
        "not a config line",
    ]
    assert uv_sources.uv_flags(lines) == [
        "--index-strategy", "unsafe-best-match",
        "--default-index", "https://mirror.example/simple",  # PIP_INDEX_URL wins over the config file
        "--index", f"file://{simple}", "--index", "https://extra.example/simple",  # the missing file:// left out
        "--find-links", str(wheels),
        "--constraint", str(cons),
    ]


def test_no_config_gives_pypi_defaults_and_no_index_is_kept(tmp_path):
    assert uv_sources.uv_flags([]) == ["--index-strategy", "unsafe-best-match"]
    missing = tmp_path / "missing.txt"
    flags = uv_sources.uv_flags(["global.no-index='true'", f"global.constraint='{missing}'",
                                 "global.index-url='file:///no/such/index'"])
    assert flags == ["--index-strategy", "unsafe-best-match", "--no-index"]
    # under no-index pip reads no index, only find-links: the same for uv
    flags = uv_sources.uv_flags(["global.no-index='1'", "global.index-url='https://mirror.example/simple'",
                                 "global.extra-index-url='https://extra.example/simple'",
                                 f"global.find-links='{tmp_path}'"])
    assert flags == ["--index-strategy", "unsafe-best-match", "--no-index", "--find-links", str(tmp_path)]
