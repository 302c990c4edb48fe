"""MOL's molrc grammar, read the way MOL's own parser (res_manager.c) reads it.

One module a job: ``bounds`` (every limit), ``source`` (opening and reading files
safely, joining continued lines), ``words`` (splitting a line into words),
``expand`` (``${name}``), ``table`` (the resources and MOL's first-wins rule),
``interpreter`` (keywords, if-blocks, include), ``disks`` (blkdev flags and MOL's
disk rules), ``keys`` (what molpy serves, how unused keys are grouped) and
``moltree`` (a MOL installation's config tree). ``molpy.config`` is the public face.
"""
