"""polydiff.threed: text to coloured mesh by score distillation through a 2D image diffusion prior.

Modules (pure PyTorch; CPU-friendly at low resolution):
- cameras:    random cameras on a sphere, per-pixel rays, view-dependent prompt words
- field:      radiance field (multi-resolution dense grids + small MLP), normals, background
- render:     volume rendering with an occupancy grid and early termination; shading; regularisers
- sds:        score distillation (SDS, CFG forms, Perp-Neg, annealing, VSD) behind `ImagePrior`
- primitives: the primitive world (SDF shapes, colours, compositions) and its sphere tracer
- dataset:    captions with paraphrases, the held-out split, `build_data` (npz shards)
- mesh:       marching cubes at the rendered surface, clean-up, glb/obj/ply export, turntable
- metrics:    IoU / Chamfer / colour error against the true shape, the direct-fit ceiling
- io:         output path checks and atomic writes
"""
