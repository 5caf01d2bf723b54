"""Thin adapters that bring virl's crop environment, rewards and data to external RL engines: one module per engine
(``trl.py`` for TRL's ``GRPOTrainer``, ``verl.py`` for verl). An adapter calls the same scorers ``virl-train`` uses
(``virl_train.rewards.score_record``) and never re-implements a reward, a parser or a box conversion.

The engines stay optional: importing ``virl_train.interop.trl`` needs neither TRL nor torch; only the test and the
example that build a ``GRPOTrainer`` do.
"""
