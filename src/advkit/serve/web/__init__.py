"""``advkit serve``: the playground, the audit browser and the run page (:mod:`.app`)."""
