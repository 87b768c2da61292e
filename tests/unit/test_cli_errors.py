"""Bad input is refused before anything is generated: exit code 2, one line naming the op/node/shape."""
import subprocess
import sys

from helpers import MODELS

SPINE = MODELS / "spine_model.py"


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "odl.cli.main", *args], capture_output=True, text=True, cwd=cwd)


def test_unsupported_op_refused(tmp_path):
    p = run("validate", f"{SPINE}:FFTNet", "--input-shape", "1x3x7x7", "--keep", str(tmp_path / "out"),
            "--frontend", "fx")
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "torch.fft.fft2" in lines[0] and "'fft_fft2'" in lines[0]
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "out").exists()  # nothing generated


def test_unsupported_aten_ops_refused_with_file_line(tmp_path):
    """The torch.export frontend (default): every ATen op odl cannot do, one line each, with the model's line."""
    p = run("validate", f"{SPINE}:FFTNet", "--input-shape", "1x3x7x7", "--keep", str(tmp_path / "out"))
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert lines[0].startswith("odl: error: torch.export frontend: 4 nodes odl cannot do"), p.stderr
    line = next(i + 1 for i, s in enumerate(SPINE.read_text().splitlines()) if "fft" in s)
    assert any("aten._fft_c2c" in s and f"spine_model.py:{line}" in s for s in lines[1:]), p.stderr
    assert len(lines) == 5 and "Traceback" not in p.stderr and "Warning" not in p.stderr
    assert not (tmp_path / "out").exists()  # nothing generated


def test_unknown_model():
    p = run("validate", "no_such_model")
    assert p.returncode == 2 and "unknown model 'no_such_model'" in p.stderr


def test_missing_class():
    p = run("validate", f"{SPINE}:Nope", "--input-shape", "1x3x8x8")
    assert p.returncode == 2 and "has no 'Nope'" in p.stderr


def test_bad_shape():
    p = run("validate", f"{SPINE}:SpineNet", "--input-shape", "1x3xQx8")
    assert p.returncode == 2 and "bad --input-shape" in p.stderr
    p = run("validate", f"{SPINE}:SpineNet", "--input-shape", "1x5x8x8")
    assert p.returncode == 2 and "does not accept input shape 1x5x8x8" in p.stderr
    assert "Traceback" not in p.stderr


def test_unsupported_layer_setting():
    p = run("validate", f"{MODELS / 'bad_models.py'}:ReflectPad", "--input-shape", "1x3x8x8", "--frontend", "fx")
    assert p.returncode == 2 and "padding_mode='reflect'" in p.stderr and "'c'" in p.stderr
    p = run("validate", f"{MODELS / 'bad_models.py'}:ReflectPad", "--input-shape", "1x3x8x8")
    assert p.returncode == 2 and "aten.reflection_pad2d" in p.stderr and "module 'c'" in p.stderr
    assert "bad_models.py:" in p.stderr and "torch/nn/modules" not in p.stderr


def test_add_with_alpha_is_refused():
    p = run("validate", f"{MODELS / 'bad_models.py'}:AddAlpha", "--input-shape", "2x4")
    assert p.returncode == 2 and "alpha=2" in p.stderr and "'add'" in p.stderr
