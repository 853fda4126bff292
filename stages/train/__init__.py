"""Training: `golf train` (run.py: `TrainJob.prepare(...).run()`) and `golf average` (average.py).

params.py      TrainParams, the `train` section
run.py         data directory in, run directory out: vocabulary, provenance, snapshots, writing
rundir.py      the run folder: a new run built beside the last one, moved in once it has finished
memory.py      the memory a run needs, estimated before anything is allocated
loop.py        the training loop: steps, schedule, EMA, late switches, resume, hooks
optim.py       Muon and AdamW groups by parameter role; LR schedule
distributed.py torchrun ranks, gradient averaging, the compiled loss
resume.py      resumable state (train.checkpoint_every, --resume)
livelog.py     dvclive curves for `dvc plots show`
validation.py  periodic validation (train.val_every)
average.py     `golf average` and AverageParams

Importing one module never imports the rest of the package (no re-exports).
"""
