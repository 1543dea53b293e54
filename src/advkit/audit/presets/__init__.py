"""Built-in audit presets: each module exposes ``run(*, seed, quick, progress) -> Report``."""
