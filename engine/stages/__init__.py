"""The stages of one batch, each a module you can read alone.

``engine/processor.py`` runs them in order for every batch of stream entries:

1. ``decode``   stream entries -> validated :class:`~engine.events.Event` or dead letters
2. identity     visitor ids folded into their lead (``features/store.py``: aliases, folds)
3. features     each event applied to its lead's cached state (``features/store.py``)
4. ``score``    prior + model -> :class:`~engine.scoring.Score`, reason codes, score records
5. ``learn``    outcomes label the lead's moments; the horizon settles old ones
6. ``alert``    the rules' decision (``engine/alerts.py``) as the alert payload
7. ``commit``   every effect and the stream positions in one transaction, then metrics

Records that cross these modules are typed (``engine/stages/batch.py``,
``engine/records.py``, ``engine/sinks.py``'s :class:`~engine.sinks.BatchEffects`).
"""
