"""Defenses: training defenses, input transforms, detectors, certification and privacy."""
