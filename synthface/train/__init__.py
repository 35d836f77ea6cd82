"""Training code: StyleGAN2 on image folders and the demo world's models."""
