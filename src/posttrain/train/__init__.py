"""Training: one typed config and one function per method, all run as a job by ``runner.run_training``.

Methods: ``sft.train_sft``, ``reward.train_reward``, ``dpo.train_dpo`` (with the collapse guard in
``guards``). Importing this package, or any config class, does not import torch or TRL; the
trainers load them when a run starts.
"""
