"""Networks and samplers: ``nets`` (diffusion UNets, autoencoders, presets) and ``schedulers``."""
