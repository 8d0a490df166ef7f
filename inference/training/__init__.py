"""Training any pair by SVI: :func:`fit`, its steppers, objectives and helpers.

:func:`fit` (:mod:`.fit`) runs minibatch SVI with checkpoints (:mod:`.checkpoints`; what a
resumed run restores and must share, :mod:`.resume`), the checks before its first step
(:mod:`.first_batch`) and the plate-scaling handlers (:mod:`.handlers`); one step is
:class:`SVIStep` (:mod:`.svi_step`) or :class:`CompiledSVIStep` (:mod:`.compiled_step`); the
multi-sample objectives live in :mod:`.objectives`, free bits in :mod:`.free_bits`, data
parallelism in :mod:`.distributed`, best-epoch selection in :mod:`.early_stopping`, and the
networks of plain-function pairs (found to keep their batch-norm statistics) in
:mod:`.registered_modules`.
"""

from ..checks import resolve_device
from .checkpoints import CheckpointError, save_checkpoint
from .compiled_step import CompiledSVIStep
from .distributed import DataParallel, init_process_group
from .early_stopping import KeepBest
from .fit import fit
from .free_bits import FreeBitsELBO, free_bits_terms
from .handlers import scale_data_plate, scale_latents
from .minibatches import MinibatchPlan, plan_minibatches
from .objectives import DReGLoss, IWAELoss, MeanFieldELBO, make_loss
from .svi_step import Adam, SVIStep

__all__ = [
    "Adam", "CheckpointError", "CompiledSVIStep", "DReGLoss", "DataParallel", "FreeBitsELBO",
    "IWAELoss", "KeepBest", "MeanFieldELBO", "MinibatchPlan", "SVIStep", "fit",
    "free_bits_terms", "init_process_group", "make_loss", "plan_minibatches", "resolve_device",
    "save_checkpoint", "scale_data_plate", "scale_latents",
]
