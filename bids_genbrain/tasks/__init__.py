"""Image-level tasks of GenBrain: scan enhancement and missing-modality synthesis.

:mod:`.spec` says what a task is (recorded in the checkpoint), :mod:`.pairs` makes its training
pairs from a cohort store, :mod:`.finetune` trains a model for it (``genbrain finetune``) and
:mod:`.apply` applies the model to one participant (``bids_genbrain ... participant
--enhance`` / ``--impute``).
"""
