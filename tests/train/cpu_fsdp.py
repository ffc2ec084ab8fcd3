"""`python tests/cpu_fsdp.py ARGS...` = `qwen-sft ARGS...` with accelerate's FSDP plugin honoured on CPU.

accelerate turns an FSDP config into plain DDP when the processes run on CPU (its `MULTI_CPU` path never looks at
the plugin), so the FSDP code paths (sharded parameters, FSDP checkpoints) would go untested without a GPU. torch
itself runs FSDP2 on CPU over gloo; this launcher only restores the plugin accelerate dropped. Test use only.
"""

import sys

from accelerate import state
from accelerate.utils import DistributedType

_init = state.AcceleratorState.__init__


def _honour_fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
    _init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = fsdp_plugin
        state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # as accelerate does on GPUs


state.AcceleratorState.__init__ = _honour_fsdp_on_cpu

if __name__ == "__main__":
    from qwen_sft.cli import main

    sys.exit(main(sys.argv[1:]))
