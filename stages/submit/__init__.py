"""Hand-in: `golf submission` (folder.py: `write_submission(...)`), the records folder the challenge
accepts, around a self-extracting train_gpt.py whose own bytes are the counted code.

entry.py   the program inside train_gpt.py: train, average, quantize, compress, read back, eval
bundle.py  packs the modules a run needs into train_gpt.py (and measures it: the counted code)
pack.py    the packed copy of each module: the same program in fewer bytes
folder.py  submission.json, README.md, the seed logs and requirements.txt
report.py  the technique summary and README.md of a submission
(the run log and the time ledger it reads are stages/train/runlog.py and stages/ledger.py)
"""
