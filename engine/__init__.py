"""How and where a population is trained.

``engine.cli`` is the ``rashomon`` command; ``engine._driver.run_job`` runs a job on Ray;
``engine._trainer.train_pack`` trains one pack of models in a single batched computation. The
package imports nothing heavy itself, so ``rashomon datasets`` or ``--help`` start instantly.
"""
