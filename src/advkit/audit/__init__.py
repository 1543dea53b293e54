"""Audits: a spec becomes a plan of scenarios; the runner executes them and builds a Report."""
