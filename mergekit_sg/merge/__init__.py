"""Merging: pure tensor math, per-key rules, the validated plan and the streaming executor."""
