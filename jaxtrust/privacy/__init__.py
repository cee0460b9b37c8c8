"""Privacy: membership inference and MemHunter dataset-level memorization detection.
(Methods land here with their issues.)"""
