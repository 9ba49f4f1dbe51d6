"""Whole experiments, each made of the layers below: a run (:mod:`foveal.recipes.run`, on the pieces that
:mod:`foveal.recipes.experiment` builds from a config and checks), the Saccader's stages
(:mod:`foveal.recipes.saccader`), policy evaluation (:mod:`foveal.recipes.policy_eval`) and the
partial-supervision comparison (:mod:`foveal.recipes.compare`). Nothing below this package starts a whole run."""
