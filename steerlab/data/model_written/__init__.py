"""Training data the base model writes itself (it needs a model, so it imports `steerlab.models` and
`steerlab.persona.generation`, never `steerlab.train`).

- `general_answers`: the general instruction set answered by the base model, for the interleaving arm.
- `self_written`: narrow data the base model writes under a domain-harm prompt (a variant of the narrow sets).
"""
