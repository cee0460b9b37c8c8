"""Multimodal: AQUA (watermarking image knowledge in multimodal RAG) and SHAPE
(self-supervised preference triplets, then DPO). (Methods land here with their issues.)"""
