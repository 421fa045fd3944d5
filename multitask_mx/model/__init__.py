"""The network: trunk + heads, pretrained weights, fine-tuning, precision."""
