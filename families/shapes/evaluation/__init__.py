"""``guidegraph eval``: measure how each guidance strategy steers the shipped models.

Samples a fixed set of seeds per class for every (strategy, scale) through the guidance engine
(:mod:`nodes.diffusion`: GUIDANCE programs and the named samplers) and scores them with the
independent evaluator (accuracy on the requested class, shape and colour), a within-class diversity
(mean pairwise RMS pixel distance), the CLIP score (cosine of image and caption embeddings) and the
seconds per image. Writes ``eval.md``, ``eval.json`` and ``eval.png``.
"""
