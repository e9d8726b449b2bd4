"""Submitting jobs to clusters: Ray Jobs (``ray_jobs.py``) and Slurm (``slurm.py``)."""
