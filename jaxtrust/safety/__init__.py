"""Safety: safety-preserving fine-tuning (SPF), one-shot safety recovery and the
activation-approximation safety audit. (Methods land here with their issues.)"""
