"""Package attribution: which package installed a file, from the package managers' own databases.

Each database has a reader beside this module (``python.py``: dist-info RECORD; ``dpkg.py``; ``rpm.py``:
rpmdb.sqlite; ``conda.py``: conda-meta). :func:`kaudit.owners.index.build_index` joins them over an image's
merged filesystem.
"""
