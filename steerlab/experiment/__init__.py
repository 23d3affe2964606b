"""The study as a tool: a grid of (domain x defense arm) runs, evaluated alike, tabulated as they finish.

Files:
  grid.py     the grid YAML: domains, arms, shared run and eval settings; expands into run configs
  runner.py   train + evaluate every cell (resumable), base model included
  results.py  results.{md,csv,json} from the eval.json files written so far
"""
