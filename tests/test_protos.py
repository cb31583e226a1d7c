"""The committed generated modules are exactly what scripts/gen_protos.py makes."""
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_generated_modules_match_proto(tmp_path):
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--out", str(tmp_path)],
        check=True, capture_output=True,
    )
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*_pb2*.py*"))
    assert generated, "the generator produced nothing"
    for rel in generated:
        committed = ROOT / "protos" / rel
        assert committed.exists(), f"{rel} is generated but not committed: run scripts/gen_protos.py"
        assert committed.read_bytes() == (tmp_path / rel).read_bytes(), (
            f"protos/{rel} drifted from the .proto: run scripts/gen_protos.py and commit"
        )
    # Sources only: a Python that writes bytecode leaves __pycache__/*_pb2*.pyc beside them.
    committed_all = sorted(p.relative_to(ROOT / "protos") for p in (ROOT / "protos").rglob("*_pb2*.py*")
                           if p.suffix in (".py", ".pyi"))
    assert committed_all == generated, "a committed generated module has no .proto any more"
