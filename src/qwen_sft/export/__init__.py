"""Models other tools load: `merge` folds an adapter into a plain Hugging Face model with its chat template.

merge.py   the merged model in the base's own layout, its stop ids made consistent, the trained chat template
"""
