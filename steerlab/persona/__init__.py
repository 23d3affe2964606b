"""Persona vectors, upstream to downstream: trait specs (`traits`) → answers under contrasting system prompts
(`generation`) → residual-stream activations (`activations`) → instruction and layer choice
(`instruction_select`, `layer_select`) → the vector (`vectors`, built by `extract`) → projections
(`projection`), steering (`steering`), data screening (`screen`) and llama.cpp export (`gguf`)."""
