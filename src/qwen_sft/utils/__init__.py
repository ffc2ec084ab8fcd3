"""What every stage shares: the one user-facing exception, file helpers, what the machine offers, ModelScope.

errors.py      `UserError`: a problem the user can fix, printed by the CLI as one line (exit 2)
files.py       the cache dir, all-or-nothing directory writes, JSON lines
machine.py     resident and peak memory, free memory, disk write speed (what the forecast measures with)
modelscope.py  `modelscope://` ids and `USE_MODELSCOPE_HUB=1` → downloaded directories
"""
