"""The commands: each module turns a `Config` into library calls. `cli.COMMANDS` lists them.

A command module has a docstring (its first line is the summary `qwen-sft --help` shows), `COMMAND` (the keys it
takes, see `config.Command`) and `main(cfg) -> int`. Heavy imports happen inside `main`, so `--help` is instant.
The library (`qwen_sft.*` outside this package) never imports a command.
"""
