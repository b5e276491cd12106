"""Walk-forward evaluation: how well the trained models forecast data they never saw.

Kept apart from training (:mod:`trainer.train`, :mod:`trainer.offline`), which it
uses: :mod:`~trainer.evaluation.split` checks how a walk splits the data,
:mod:`~trainer.evaluation.next_request` walks the next-request task,
:mod:`~trainer.evaluation.load` the load task (with online intervals),
:mod:`~trainer.evaluation.stats` scores both (MAE, sMAPE, coverage, the verdict
against the best baseline with a block-bootstrap interval of the MAE ratio) and
:mod:`~trainer.evaluation.report` writes the markdown tables.
"""
