"""Class health: a verdict per model, class and date, carried forward from the stored state of the day before.

Pure calculators, one concept a module, each taking counts and the few numbers it needs (no store, files or settings):

- :mod:`.calibration`: the lattice, run lengths and the calibrated thresholds (:func:`~.calibration.design`);
- :mod:`.detector`: one day's step of the statistics (:func:`~.detector.advance`) and the verdict rule;
- :mod:`.judge`: the classes of one day judged from their counts into typed ``class_health`` rows, and the
  rule that grants follow-up images within the daily cap;
- :mod:`.policy`: the settings numbers a day is judged under (:class:`~.policy.HealthPolicy`).

The pipeline's :mod:`monitor.orchestration.health_stage` does the I/O: it keeps calibrations on disk, reads the
counts and the stored rows, and writes the day's rows. ``benchmarks/bench_health.py`` runs these very functions
over simulated years. Import from the modules; this package re-exports nothing.

**What a verdict means.** ``needs_retraining``: the evidence says the class has fallen below its target
and has not come back. ``watch``: the evidence leans that way; the next day's sample draws extra images of
the class (follow-up) to settle it. ``healthy``: neither. ``insufficient_data``: fewer than ``min_samples``
images evaluated so far.

draw, correct with the class's accuracy. A validation bucket is finite and a model is deterministic, so the
sampler (``monitor/domain/sampling.py``) never draws an image the model has already evaluated (by content on GCS),
and the metrics step counts each image once (the ``evaluations`` collection). The error rates are then about
the class's accuracy on images like those in the bucket, each counted once: a class of ``M`` images can show
at most ``M`` images of evidence, and a class with nothing unseen left adds no evidence (its verdict carries
over, and says so) until new images arrive. Measured with ``benchmarks/bench_health.py`` (README): with each
image once, a bucket of 200 / 1,000 / 5,000 images per class keeps false alarms under the bound; re-counting
the same images (main before 2026-12-07) gave 6.5 / 2.4 / 0.64 a year. What a bucket can show: a class at 0.75 is
flagged after 109 of its images on average (the chain, one image a step), at 0.80 after 176, at 0.85 after 453,
at 0.88 after 2,560: a bucket with fewer images of a class than that cannot show such a drop with this budget.
A class the model has never evaluated draws ``first_draw`` images at once (``MONITOR_FIRST_DRAW``, 200), so a
bucket that already holds hundreds of images per class gets a verdict on day one; a draw of any size from 0
adds at most ``e**-h`` to the false-alarm probability (Ville's inequality for the likelihood ratio), 4e-5 a
class at the defaults.
"""
