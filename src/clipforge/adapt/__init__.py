"""Adapting a CLIP model to a classification task: template search, linear probe, CoOp and WiSE-FT."""
