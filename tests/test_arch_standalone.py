"""The arch file is self-contained: it imports and runs with torch alone, copied anywhere."""

import subprocess
import sys
from pathlib import Path

ARCH = Path(__file__).resolve().parents[1] / "hersr_arch" / "archs" / "hersr_arch.py"


def test_arch_file_imports_without_basicsr(tmp_path):
    copy = tmp_path / "hersr_arch.py"
    copy.write_text(ARCH.read_text())
    code = (
        "import sys\n"
        "sys.modules['basicsr'] = None  # make basicsr unimportable\n"
        "import torch\n"
        "before = {k.split('.')[0] for k in sys.modules}\n"
        "import hersr_arch\n"
        "m = hersr_arch.hersr_s(upscale=2).eval()\n"
        "print(tuple(m(torch.rand(1, 3, 9, 7)).shape))\n"
        "print(sorted({k.split('.')[0] for k in sys.modules} - before - {'hersr_arch', 'einops'}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "(1, 3, 18, 14)"
    assert lines[1] == "[]", f"the arch file pulled in modules beyond torch and einops: {lines[1]}"
