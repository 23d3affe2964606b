"""The study as a tool: a grid of (domain x defense arm) runs, evaluated alike, tabulated as they finish.

Files:
  grid.py     the grid YAML: domains, arms, shared run and eval settings; expands into run configs
  settings.py the grid's `resources` (what a cell asks of a node) and `dry_run` sections
  preflight.py every cell's training data read and tokenized before anything trains
  runner.py   train + evaluate every cell (resumable), base model included; hands jobs to the engine
  finished.py a resume refuses finished parts made with other settings than the grid file now gives
  engine.py   where jobs run: this process, a local Ray instance (--jobs N), a Ray cluster (--address)
  dryrun.py   --dry-run: every cell stepped on CPU on a stand-in of the real architecture
  estimate.py GPU memory (measured on the meta device) and time (FLOPs) of a cell on the real model
  results.py  results.{md,csv,json} from the eval.json files written so far, failed cells named
  shifts.py   paired stance shifts per cell (vs base, control arm, benign fine-tune) and a defense's shares
  monitoring.py  training-time columns: drift alarm, early stop, final projection; the alarm's precision,
              recall and AUROC against the cells that end misaligned
"""
