"""The argument tree: every key of every command, declared once, parsed and validated in one place.

schema.py          typed sections (model, data, lora, train, sampling, serve), each key with its default, accepted
                   values and help; `Command` = which keys a command takes
parse.py           YAML + `--key value` parsed by each key's declared type; one error listing every problem
help.py            `--help`, generated from the same declarations
training_args.py   transformers' `TrainingArguments` built from the config
"""
