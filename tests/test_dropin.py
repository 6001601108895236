"""The arch file alone, copied into neosr or traiNNer-redux, registers and trains there.

Neither framework is installable from PyPI, so each test builds minimal stand-in packages that
follow the conventions the arch file relies on (read from their sources): neosr's registry asserts
on duplicate names and ``neosr.archs.arch_util.net_opt()`` parses the training options (raising
outside ``train.py``); traiNNer-redux's registry stores names lowercased and also asserts on
duplicates. The arch file is then loaded by path with importlib in a fresh interpreter.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ARCH = Path(__file__).resolve().parents[1] / "hersr_arch" / "archs" / "hersr_arch.py"

REGISTRY = '''
class Registry:
    def __init__(self, name, lowercase=False):
        self._name, self._lowercase, self._obj_map = name, lowercase, {}

    def _key(self, name):
        return name.lower() if self._lowercase else name

    def register(self, obj=None, suffix=None):
        def add(o):
            name = self._key(o.__name__)
            assert name not in self._obj_map, f"An object named '{name}' was already registered"
            self._obj_map[name] = o
            return o
        return add if obj is None else add(obj)

    def get(self, name):
        return self._obj_map[self._key(name)]

    def __contains__(self, name):
        return self._key(name) in self._obj_map

    def __iter__(self):
        return iter(self._obj_map.items())
'''

NEOSR_FILES = {
    "neosr/__init__.py": "",
    "neosr/utils/__init__.py": "",
    # As in neosr, the registry module itself is harmless; the option parser is not.
    "neosr/utils/registry.py": REGISTRY + "\nARCH_REGISTRY = Registry('arch')\n"
    "for _name in ('span', 'realplksr', 'swinir_small', 'hat_s', 'esrgan', 'compact'):\n"
    "    ARCH_REGISTRY._obj_map[_name] = object\n",
    "neosr/utils/options.py": textwrap.dedent('''
        OPTIONS = None  # set by train.py after reading the config

        def parse_options(root_path, is_train=True):
            if OPTIONS is None:
                raise ValueError("Didn't get a config! Please link the config file using -opt")
            return OPTIONS, type("Args", (), {"input": None})()
    '''),
    "neosr/archs/__init__.py": "",
    "neosr/archs/arch_util.py": textwrap.dedent('''
        from neosr.utils.options import parse_options

        def net_opt():
            opt, args = parse_options("", is_train=True)
            return opt["scale"], "train" in opt["datasets"]
    '''),
}

TRAINNER_FILES = {
    "traiNNer/__init__.py": "",
    "traiNNer/utils/__init__.py": "",
    "traiNNer/utils/registry.py": REGISTRY + textwrap.dedent('''
        ARCH_REGISTRY = Registry("arch", lowercase=True)
        SPANDREL_REGISTRY = Registry("spandrel", lowercase=True)
        for _name in ("span", "realplksr", "realplksr_tiny", "swinir_s", "dat_light", "esrgan"):
            SPANDREL_REGISTRY._obj_map[_name] = object
    '''),
    "traiNNer/archs/__init__.py": "",
}


def build(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def run_child(root: Path, body: str, timeout: int = 600) -> dict:
    """Run ``body`` in a fresh interpreter (cwd ``root``, one thread); it must print one JSON line."""
    prelude = textwrap.dedent(f'''
        import importlib.util, json, sys
        import torch
        torch.set_num_threads(1)
        sys.path.insert(0, {str(root)!r})

        def load_arch(module_name):
            spec = importlib.util.spec_from_file_location(module_name, {str(root / "hersr_arch_copy.py")!r})
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
            return module
    ''')
    (root / "hersr_arch_copy.py").write_text(ARCH.read_text())
    result = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(body)], cwd=root,
                            capture_output=True, text=True, timeout=timeout)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_neosr_registers_uses_net_opt_scale_and_trains(tmp_path):
    build(tmp_path, NEOSR_FILES)
    out = run_child(tmp_path, '''
        import neosr  # neosr is the running program (its train.py imported it)
        from neosr.utils import options
        options.OPTIONS = {"scale": 2, "datasets": {"train": {}}}  # top-level scale only, as neosr configs
        from neosr.utils.registry import ARCH_REGISTRY
        arch = load_arch("neosr.archs.hersr_arch")
        load_arch("neosr.archs.hersr_arch_again")  # a second copy: duplicates are skipped, not asserted
        names = sorted(k for k in ARCH_REGISTRY._obj_map if "hersr" in k.lower())
        net = ARCH_REGISTRY.get("hersr_s")()  # neosr builds network_g without a scale
        explicit = ARCH_REGISTRY.get("hersr_s")(upscale=3).upscale
        try:
            arch.hersr_s(upscale=2, scale=3)
            clash = None
        except ValueError as err:
            clash = str(err)
        # neosr trains channels_last under bf16 autocast
        net = net.train().to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(net.parameters())
        x = torch.rand(2, 3, 16, 16).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = (net(x).float() - torch.rand(2, 3, 32, 32)).abs().mean()
        loss.backward()
        opt.step()
        finite = all(torch.isfinite(p).all() for p in net.parameters())
        print(json.dumps(dict(names=names, default=net.upscale, explicit=explicit, clash=clash,
                              finite=finite, registry=arch._REGISTRY is ARCH_REGISTRY)))
    ''')
    assert out["registry"]
    assert out["names"] == ["HERSR", "hersr_l", "hersr_m", "hersr_s"]
    assert out["default"] == 2, "under neosr the default scale must come from net_opt()"
    assert out["explicit"] == 3
    assert "upscale=2 and scale=3" in out["clash"]
    assert out["finite"]


def test_neosr_on_the_path_but_not_running_is_not_touched(tmp_path):
    """Importing neosr's option machinery outside its train.py raises; the arch file must not try."""
    build(tmp_path, NEOSR_FILES)
    out = run_child(tmp_path, '''
        sys.modules["basicsr"] = None  # no BasicSR either: the file must still work standalone
        arch = load_arch("hersr_arch_copy")
        model = arch.hersr_s().eval()
        with torch.no_grad():
            shape = list(model(torch.rand(1, 3, 8, 8)).shape)
        print(json.dumps(dict(registry=arch._REGISTRY is None, shape=shape,
                              neosr=[m for m in sys.modules if m.startswith("neosr")])))
    ''')
    assert out == {"registry": True, "shape": [1, 3, 32, 32], "neosr": []}


def test_trainner_redux_conventions(tmp_path):
    """traiNNer-redux's arch tests: every registered arch at scales 1-4 on 1x3x16x16 in eval, and a
    training step (L1, backward, AdamW) with no NaN in output, loss, gradients or parameters."""
    build(tmp_path, TRAINNER_FILES)
    out = run_child(tmp_path, '''
        import traiNNer
        from traiNNer.utils.registry import ARCH_REGISTRY, SPANDREL_REGISTRY
        arch = load_arch("traiNNer.archs.hersr_arch")
        names = sorted(k for k, _ in ARCH_REGISTRY if "hersr" in k)
        clashes = [k for k in names if k in SPANDREL_REGISTRY]
        results = {}
        for name in names:
            for scale in (1, 2, 3, 4):
                torch.manual_seed(0)
                lq = torch.rand(1, 3, 16, 16)
                model = ARCH_REGISTRY.get(name)(scale=scale).eval()
                with torch.inference_mode():
                    shape_ok = tuple(model(lq).shape) == (1, 3, 16 * scale, 16 * scale)
                model = ARCH_REGISTRY.get(name)(scale=scale).train()
                optimizer = torch.optim.AdamW(model.parameters())
                gt = torch.rand(1, 3, 16 * scale, 16 * scale)
                output = model(lq)
                loss = torch.nn.functional.l1_loss(output, gt)
                loss.backward()
                grads_ok = all(not torch.isnan(p.grad).any() for p in model.parameters() if p.grad is not None)
                optimizer.step()
                params_ok = all(not torch.isnan(p).any() for p in model.parameters())
                results[f"{name}x{scale}"] = bool(shape_ok and output.shape == gt.shape
                                                  and not torch.isnan(output).any()
                                                  and not torch.isnan(loss) and grads_ok and params_ok)
        print(json.dumps(dict(names=names, clashes=clashes, results=results,
                              registry=arch._REGISTRY is ARCH_REGISTRY)))
    ''', timeout=900)
    assert out["registry"]
    assert out["names"] == ["hersr", "hersr_l", "hersr_m", "hersr_s"]
    assert out["clashes"] == []
    assert len(out["results"]) == 16
    failed = [k for k, ok in out["results"].items() if not ok]
    assert failed == [], f"traiNNer-style checks failed for {failed}"


@pytest.mark.parametrize("framework", ["neosr", "traiNNer"])
def test_names_do_not_clash_with_the_framework(framework, tmp_path):
    """A name the framework already has would stop neosr's import or be shadowed in traiNNer."""
    build(tmp_path, NEOSR_FILES if framework == "neosr" else TRAINNER_FILES)
    out = run_child(tmp_path, f'''
        import {framework}
        from {framework}.utils import registry
        before = set(registry.ARCH_REGISTRY._obj_map)
        load_arch("{framework}.archs.hersr_arch")
        added = set(registry.ARCH_REGISTRY._obj_map) - before
        print(json.dumps(dict(added=sorted(added), before=sorted(before))))
    ''')
    assert len(out["added"]) == 4 and not set(out["added"]) & set(out["before"])
