"""The alpha syntax (`0:1:0.1` ranges and comma lists), kept in the root `mergekit_sg.alphas`
so that interpolate's --alpha (merge layer) and scan's --alphas parse the same way."""

from mergekit_sg.alphas import parse_alphas

__all__ = ["parse_alphas"]
