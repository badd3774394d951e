"""The pieces of examples/pretrain_gpt.py: corpora, model, one rank of training, report."""
