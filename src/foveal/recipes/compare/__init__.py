"""``foveal compare``: the partial-supervision comparison. Its settings and plan (:mod:`.config`), the inputs
its runs need (:mod:`.inputs`), the runs (:mod:`.run`), a cost estimate (:mod:`.estimate`) and the report
(:mod:`.report`)."""
