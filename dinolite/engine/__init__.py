"""The run engine: what every training run (pretraining, fine-tuning) needs around its step, once.

- ``runtime``: device, CPU threads, process group, per-rank batch, batches copied ahead to the device;
- ``streams``: the table of random streams both tasks follow (augmentation per global sample, drop path per rank);
- ``loop``: the step loop and every stop decision, made collectively (NaN, checkpoint due), over a ``Task``;
- ``checkpoint``: atomic checkpoints, retention that keeps the last good state, safe loading;
- ``rundir``: the run directory and the checks of a resume before anything is written;
- ``lock``: one process owns a run directory for the run's life;
- ``files``: the one atomic write (temp, fsync, rename, fsync of the folder) and its one-line failure.

The tasks are ``dinolite.pretraining.train.Pretrainer`` and ``dinolite.finetune.trainer.FinetuneTrainer``.
"""
