"""Evaluators: a live model in, named float metrics out, each tagged speciality or generality."""
