"""Data valuation: LTSV, time-series data valuation on a time-series foundation model.
(Methods land here with their issues.)"""
