"""Measuring animators: per-frame metrics, the paper's protocol over a folder of clips, paired comparisons."""
