"""Flax language models and their parameter / FLOP accounting."""


def build_model(cfg):
    """The Flax module for a model config."""
    from model.transformer import Transformer
    return Transformer(cfg)
