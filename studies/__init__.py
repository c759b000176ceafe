"""Ablation studies: rows x seeds of ``train.py`` runs from a YAML spec (:mod:`studies.spec`), launched on this
machine (:mod:`studies.local`) or as SLURM jobs (:mod:`studies.slurm`), followed (:mod:`studies.status`), and
tabulated into the README (:mod:`studies.table`). ``ablate.py`` is the command line."""
