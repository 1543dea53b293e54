"""Privacy attacks (membership inference, inversion, extraction), one module per algorithm.

Membership inference: ``loss_threshold`` (Yeom et al. 2018), ``entropy`` (modified entropy, Song &
Mittal 2021), ``lira`` (Carlini et al. 2022), ``rmia`` (Zarifzadeh et al. 2024), ``shokri``
(shadow models with per-class attack models, Shokri et al. 2017) and ``label_only`` (predicted
labels only, Choquette-Choo et al. 2021); ``shadow`` trains their shadow/reference models
(together in one vmap pass, or one by one) and ``common`` reads a Target's or a callable's
probabilities. Their metrics live in ``advkit.evaluation.privacy``.
Model inversion: ``mi_face`` (Fredrikson et al. 2015) and ``attribute_inference`` (Fredrikson et
al. 2014; Yeom et al. 2018), scored by ``advkit.evaluation.inversion``.
"""
