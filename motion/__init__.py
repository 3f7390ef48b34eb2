"""polydiff.motion: text-to-motion on the 22-joint SMPL / HumanML3D skeleton (issue 7, in progress).

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
"""
