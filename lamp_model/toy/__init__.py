"""The toy motion world: LAMP trained from scratch on synthetic clips, small enough for a CPU.

A tiny "text-to-image" model (stage 1) learns to draw coloured shapes; LAMP inflates it and learns ONE
motion from 16 clips (stage 2) with the engine's real trainer; the engine's real sampler then animates
first frames the motion training never saw (stage 3). The shipped weights under ``weights/`` make
``python -m lamp_model demo`` work offline in seconds. See the README (Toy motion world).
"""
