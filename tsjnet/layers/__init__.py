"""Reusable layers of the TSJNet network, one per file."""

from tsjnet.layers.neighborhood_attention import NeighborhoodAttention2D, neighborhood_attention_2d

__all__ = ["NeighborhoodAttention2D", "neighborhood_attention_2d"]
