"""Privacy attacks (membership inference, inversion, extraction), one module per algorithm."""
