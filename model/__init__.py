"""Flax language models and their parameter / FLOP accounting."""


def build_model(cfg):
    """The Flax module for a model config: TransformerConfig.architecture picks it."""
    if cfg.architecture == "encoder_decoder":
        from model.encoder_decoder import EncoderDecoder
        return EncoderDecoder(cfg)
    from model.transformer import Transformer
    return Transformer(cfg)
