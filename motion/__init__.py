"""polydiff.motion: text-to-motion on the 22-joint SMPL / HumanML3D skeleton (issue 7).

Foundation modules (no model needed):
    skeleton    joint names, kinematic chain, rest offsets (metres, +Y up, facing +Z)
    rotations   quaternion / 6D / axis-angle / matrix / Euler conversions (batched torch)
    kinematics  forward kinematics, analytic + refined inverse kinematics
    features    HumanML3D 263-dim features, differentiable recovery, Mean/Std
    dataset     HumanML3D / KIT-ML folder loader
    posing, stepping, procedural, captions, corpus
                the procedural text-motion corpus (`polydiff motion build-data`)
    metrics     foot skating, penetration, floating, jerk; attribute checkers
    losses      geometric training losses (positions, velocities, foot contact) through the recovery
    footlock, bvh, gltf, preview, export   clean-up and export (`polydiff motion convert`)
    smpl        SMPL pose parameters and meshes through smplx, from user-supplied model files
    model       MotionDenoiser: MDM-style transformer denoiser (EDM preconditioning) on the core DiT
    train       training recipe (`polydiff train motion --config motion/configs/t2m_small.yaml`)
    pipeline    generate / inbetween / regenerate / generate_long -> Motion (saves itself by extension)
    evaluator   OUR contrastive motion-text evaluator (R-precision, FID analogue; not the T2M one)
    demo        the motion part of `polydiff demo`

Notebook use: `polydiff.motion.generate("a person walks forward then waves", seconds=6).save("walk.bvh")`.
"""

_PIPELINE = ("generate", "inbetween", "regenerate", "generate_long", "Motion", "MotionError", "load_model")


def __getattr__(name):
    # lazy: the CLI imports this package to register the plugin, and must not pay for torch models here
    if name in _PIPELINE:
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
