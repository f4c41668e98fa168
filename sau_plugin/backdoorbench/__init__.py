"""BackdoorBench adapters around the SAU core.

* ``record``: safe reading of ``attack_result.pt`` and the poisoned test set it describes;
* ``datasets`` / ``transforms``: clean splits from disk and the test transform, no torchvision;
* ``loaders``: ``--loader auto|backdoorbench|standalone``;
* ``results``: ``<name>_df.csv``, summary, plots, ``defense_result.pt`` (all atomic);
* ``defense``: ``run_defense``, the ``sau`` defense class and ``sau-plugin defend``;
* ``install``: ``sau-plugin install-into <BackdoorBench root>``;
* ``attack_result``: a writer of ``attack_result.pt`` (demo and tests).
"""
