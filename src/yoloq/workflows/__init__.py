"""The workflows, siblings over shared steps: `ptq`, `sensitivity`, `qat` and `demo`.

`steps` (prepare, quantize and calibrate, evaluate, export, deploy on a backend,
report rows), `config` (the run configs) and `training` (the QAT engine) are shared;
a workflow imports them and the core, never another workflow.
"""
