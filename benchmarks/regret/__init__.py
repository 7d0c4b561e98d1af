"""Regret benchmark for learning-rate suggestions (see README.md in this folder).

Modules: ``tasks`` (the suite), ``train`` (the training loop), ``oracle`` (the
grid-search oracle and the per-step curves), ``regret`` (scoring), ``rules``
(the peers' suggestion rules from their published definitions), ``methods``
(every method side by side), ``run`` (the report), ``probe`` (where the best LR
sits on range-test curves).
"""
