"""Crash-safe checkpoints for BasicSR: every ``.pth`` and ``.state`` file is written atomically.

BasicSR 1.4.2 (models/base_model.py, ``save_network`` and ``save_training_state``) calls
``torch.save`` straight onto the final file name. A process killed during the save (SIGKILL, the
OOM killer, a pre-empted job, a power cut) leaves a truncated file under that name: the
``net_g_latest.pth`` of a finished run is lost, and ``--auto_resume`` picks the truncated highest
``<iter>.state`` and fails to load it.

Here every file is written to a temporary file in the same folder (``.<name>.<pid>.tmp``: never
mistaken for a ``.pth`` or ``.state``), flushed and ``fsync``-ed, then renamed onto the final name
with ``os.replace`` (atomic within one file system), and the folder is ``fsync``-ed so that the
rename itself is durable. A reader sees the old file or the new one, never a part of one. File
names, contents, the ``@master_only`` rule (only rank 0 writes) and the three retries of BasicSR
are kept. Temporary files left by a killed process are removed by the next save in that folder.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only

TMP_SUFFIX = ".tmp"


def _temporary_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that killed processes left in ``folder`` (not this process's)."""
    removed = []
    mine = f".{os.getpid()}{TMP_SUFFIX}"
    for path in Path(folder).glob(f".*{TMP_SUFFIX}"):
        parts = path.name.rsplit(".", 2)  # ['.<name>', '<pid>', 'tmp']
        if len(parts) == 3 and parts[1].isdigit() and not path.name.endswith(mine):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` that never leaves a partial file at ``path``.

    Writes ``.<name>.<pid>.tmp`` next to ``path``, flushes and fsyncs it, renames it onto ``path``
    with ``os.replace`` and fsyncs the folder. On any error the temporary file is removed and
    ``path`` keeps its previous content (or stays absent).
    """
    path = Path(path)
    tmp = _temporary_path(path)
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _save_with_retries(obj, path: str, what: str) -> bool:
    """BasicSR's three attempts with a warning each; the file is written atomically."""
    logger = get_root_logger()
    remove_stale_temporaries(os.path.dirname(path) or ".")
    for retry in range(3, 0, -1):
        try:
            atomic_torch_save(obj, path)
            return True
        except Exception as e:
            logger.warning(f"Save {what} error: {e}, remaining retry times: {retry - 1}")
            time.sleep(1)
    logger.warning(f"Still cannot save {path}. Just ignore it (the previous files are intact).")
    return False


@master_only
def save_network(self, net, net_label, current_iter, param_key="params"):
    """``BaseModel.save_network`` of BasicSR 1.4.2, with an atomic write.

    Same file (``<models>/<net_label>_<iter|latest>.pth``) and content (``{param_key: state_dict}``,
    CPU tensors, ``module.`` prefixes removed).
    """
    if current_iter == -1:
        current_iter = "latest"
    save_path = os.path.join(self.opt["path"]["models"], f"{net_label}_{current_iter}.pth")
    nets = net if isinstance(net, list) else [net]
    param_keys = param_key if isinstance(param_key, list) else [param_key]
    assert len(nets) == len(param_keys), "The lengths of net and param_key should be the same."
    save_dict = {}
    for net_, param_key_ in zip(nets, param_keys):
        state_dict = self.get_bare_model(net_).state_dict()
        for key, param in state_dict.items():
            if key.startswith("module."):  # remove unnecessary 'module.'
                key = key[7:]
            state_dict[key] = param.cpu()
        save_dict[param_key_] = state_dict
    _save_with_retries(save_dict, save_path, "model")


@master_only
def save_training_state(self, epoch, current_iter):
    """``BaseModel.save_training_state`` of BasicSR 1.4.2, with an atomic write.

    Same file (``<training_states>/<iter>.state``) and content (``epoch``, ``iter``, the
    ``state_dict()`` of every optimizer and scheduler); nothing is saved for ``current_iter == -1``.
    """
    if current_iter == -1:
        return
    state = {"epoch": epoch, "iter": current_iter, "optimizers": [], "schedulers": []}
    for o in self.optimizers:
        state["optimizers"].append(o.state_dict())
    for s in self.schedulers:
        state["schedulers"].append(s.state_dict())
    save_path = os.path.join(self.opt["path"]["training_states"], f"{current_iter}.state")
    _save_with_retries(state, save_path, "training state")
