"""IoU, Chamfer and colour error against shapes with known answers."""


import numpy as np
import torch
import trimesh
from polydiff.threed.metrics import evaluate_mesh, mesh_occupancy, reference_mesh
from polydiff.threed.primitives import PALETTE, compose, single


def colored(mesh, rgb):
    mesh.visual.vertex_colors = np.tile(np.array([*(np.array(rgb) * 255).round(), 255], np.uint8), (len(mesh.vertices), 1))
    return mesh


def test_mesh_occupancy_of_a_sphere_and_a_torus():
    ax = torch.linspace(-0.8, 0.8, 40, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1)
    inside = mesh_occupancy(trimesh.creation.icosphere(subdivisions=4, radius=0.5), grid)
    truth = grid.norm(dim=-1) < 0.5
    assert (inside != truth).float().mean() < 0.01
    torus = trimesh.creation.torus(major_radius=0.4, minor_radius=0.15)        # axis z
    inside = mesh_occupancy(torus, grid)
    truth = torch.stack([grid[..., :2].norm(dim=-1) - 0.4, grid[..., 2]], -1).norm(dim=-1) < 0.15
    assert (inside != truth).float().mean() < 0.01 and not inside[20, 20].any()   # the hole is empty


def test_iou_with_itself_is_one_and_survives_moving_and_scaling():
    for shape in ("cube", "torus", "cone"):
        scene = single(shape, "red")
        ref = colored(reference_mesh(scene, 64), PALETTE["red"])
        m = evaluate_mesh(ref, scene, reference=ref, resolution=48, n_points=500)
        assert m["iou"] > 0.97 and m["color_error"] < 0.003, (shape, m)
        moved = ref.copy()
        moved.apply_scale(0.6)
        moved.apply_translation([0.2, -0.1, 0.3])
        assert evaluate_mesh(moved, scene, reference=ref, resolution=48, n_points=500)["iou"] > 0.96, shape


def test_disjoint_shapes_have_zero_iou_and_concentric_spheres_a_known_chamfer():
    scene = single("sphere", "blue")                                             # r = 0.5 at the origin
    far = trimesh.creation.icosphere(subdivisions=4, radius=0.2)
    far.apply_translation([0.8, 0.0, 0.0])
    ref = reference_mesh(scene, 64)
    assert evaluate_mesh(far, scene, normalise=False, reference=ref, resolution=32, n_points=500)["iou"] == 0.0
    inner = trimesh.creation.icosphere(subdivisions=5, radius=0.4)
    m = evaluate_mesh(inner, scene, normalise=False, reference=ref, n_points=4000)
    assert abs(m["iou"] - 0.4 ** 3 / 0.5 ** 3) < 0.03                            # nested balls
    assert 0.2 <= m["chamfer"] < 0.2 + 0.03                                      # |r1 - r2| each way + sampling


def test_colour_error_is_the_palette_distance_per_part():
    scene = compose(("cube", "red"), ("sphere", "blue"))
    ref = reference_mesh(scene, 64)
    red, blue = np.array(PALETTE["red"]), np.array(PALETTE["blue"])
    assert abs(evaluate_mesh(colored(ref.copy(), red), scene, reference=ref, resolution=16, n_points=100)["color_error"]
               - np.abs(red - blue).mean() * frac_on_part(ref, scene, 1)) < 0.01


def frac_on_part(mesh, scene, part):
    v = torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32)
    return (scene.part_sdfs(v).argmin(-1) == part).float().mean().item()
