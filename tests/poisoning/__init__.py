"""Tests of the poisoning attacks and training-set detectors."""
