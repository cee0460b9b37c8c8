"""Unlearning: MAPE-Unlearn (masked-parameter unlearning) and RSU (risk-ordered unlearning).
(Methods land here with their issues.)"""
