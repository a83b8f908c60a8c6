"""Vision + post-hoc EKF baseline ("UMETrack + EKF", AVI-HT Table 1): glove gyros propagate
the joint angles between frames, the vision-only network's estimate corrects them.

State
    ``x = θ ∈ ℝ²²``, the joint angles (``JOINT_NAMES`` order), covariance ``P``. The wrist
    pose is taken from vision unfiltered (see "left out" below).

Process model (gyro integration of relative orientation changes between adjacent-bone sensors)
    Every sensor ``c`` whose bone has a sensor-carrying ancestor gets a *chain* ``(p, c)``:
    ``p`` the nearest such ancestor sensor, ``J_pc`` the joints on the bone path between
    them (``index_proximal``→``index_distal``: PIP+DIP; ``hand_back``→``index_proximal``:
    MCP flex+abd; ``hand_back``→``pinky_proximal``: CMC+MCP). With ``S_p, S_c`` the sensor
    orientations (bone frames from FK × glove mount rotations) the relative rotation
    ``R_pc = S_pᵀ S_c`` depends only on ``θ_J``, and its body rate is what the two gyros see::

        ω_rel = ω_c − R_pcᵀ ω_p  =  A_pc(θ) θ̇_J,     A_pc[:, j] = vee(R_pcᵀ ∂R_pc/∂θ_j)

    (ω in each sensor's own frame; the hand's and the head's own motion cancels). The joint
    rates are the ridge least-squares solution ``θ̇_J = (AᵀA + λI)⁻¹Aᵀ ω_rel`` (minimum-norm
    along directions the gyros cannot see, e.g. how a PIP+DIP rate splits), and
    ``f(x) = x + Σ_samples θ̇ Δt`` over the IMU samples since the previous frame.
    ``A`` is evaluated at the prior state (θ changes little within a 16 ms frame) and the
    process Jacobian is taken as ``F = I`` (the state dependence of ``A`` enters at second
    order). Process noise per frame, with ``Π`` the projector onto the gyro-observed joint-rate
    directions (``Π = (AᵀA + λI)⁻¹AᵀA`` per chain, 0 for joints without a live chain)::

        Q = Δt² (σ_obs² Π + σ_unobs² (I − Π)) + q_rw² Δt I

Measurement model (the vision-only estimate with its predicted σ)
    ``z = θ_vis`` (the vision network's joint angles), ``h(x) = x``, with noise
    ``R = diag((JᵀΣ_l⁻¹J + I/σ_u²)⁻¹)``: the joint-angle variances implied by the network's
    per-landmark σ (``Σ_l = σ_l²I₃`` per landmark, floored and scaled) through the FK Jacobian
    ``J = ∂FK/∂θ`` (63×22, numerical) at the vision estimate — joints whose landmarks the
    network is unsure of, or that move landmarks little, are trusted less. (Measuring the 63
    landmark coordinates directly would treat their errors as independent although they stem
    from 22 angles, over-weighting vision; the joint-space form avoids that.) Standard Kalman
    update (Joseph form), then the state is clipped into the joint limits. The first frame
    initialises ``x = θ_vis, P = R``.

Left out: filtering the wrist pose (the hand-back gyro gives its rotation rate, but relating
it to the camera needs the head's motion, and translation is not observable by a 6-DoF
glove), and gravity-direction (inclination) measurements of the finger IMUs, which would
bound drift further; the vision update already does.

Gyro input: per-sensor angular velocity samples between frames, ``[n, N_s, 3]`` rad/s in
each IMU's frame (the raw glove stream). A sensor marked invalid breaks its chains for that
sample (their joints fall back to the ``σ_unobs`` random walk). :func:`gyro_from_imu_window`
takes them from an IMU feature window when its feature set carries every gyro
(``gravity+gyro``); with the default set the hand-back gyro is missing, so the chains from
the palm are lost.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avi_ht_ros.common.glove_model import GloveModel
from avi_ht_ros.common.hand_model import (
    BONE_PARENT,
    JOINT_BONE,
    NUM_JOINTS,
    HandModel,
    bone_path,
    default_hand_model,
    forward_kinematics_numpy,
)


@dataclass
class EkfConfig:
    """Noise parameters of :class:`JointAngleEkf` (SI units)."""

    observed_rate_noise_rad_s: float = 0.3
    """σ_obs: joint-rate error along gyro-observed directions (gyro noise, mounting and model error)."""
    unobserved_rate_noise_rad_s: float = 10.0
    """σ_unobs: joint-rate uncertainty along directions no live chain observes."""
    random_walk_rad_per_sqrt_s: float = 0.05
    """q_rw: random walk on every joint (gyro bias, slow model drift)."""
    measurement_sigma_floor_m: float = 0.003
    """Lower bound on the vision σ used as measurement noise."""
    measurement_sigma_scale: float = 1.0
    """Multiplier on the network's σ (calibration)."""
    unconstrained_joint_std_rad: float = 1.0
    """Prior σ that bounds the vision variance of joints the landmarks hardly constrain."""
    ridge: float = 1e-3
    """λ of the chain least squares (rad²/s² scale-free regulariser)."""
    jacobian_step_rad: float = 1e-4


@dataclass(frozen=True)
class SensorChain:
    """Adjacent-bone sensor pair ``(parent, child)`` and the joints between their bones."""

    parent_sensor: int
    child_sensor: int
    joints: tuple[int, ...]


def sensor_chains(glove: GloveModel) -> tuple[SensorChain, ...]:
    """Chains from every sensor to its nearest sensor-carrying ancestor bone (see module doc)."""
    bones = glove.sensor_bone_indices
    first_sensor_on_bone = {}
    for sensor, bone in enumerate(bones):
        first_sensor_on_bone.setdefault(int(bone), sensor)
    chains = []
    for child, bone in enumerate(bones):
        ancestor = BONE_PARENT[int(bone)]
        while ancestor >= 0 and ancestor not in first_sensor_on_bone:
            ancestor = BONE_PARENT[ancestor]
        if ancestor < 0:
            continue
        path_bones = set(bone_path(ancestor, int(bone))[1:])  # below the parent sensor's bone
        joints = tuple(j for j in range(NUM_JOINTS) if JOINT_BONE[j] in path_bones)
        if joints:
            chains.append(SensorChain(first_sensor_on_bone[ancestor], child, joints))
    return tuple(chains)


def _vee(skew_matrices: np.ndarray) -> np.ndarray:
    """Antisymmetric part of ``[..., 3, 3]`` → vector ``[..., 3]``."""
    m = 0.5 * (skew_matrices - np.swapaxes(skew_matrices, -1, -2))
    return np.stack([m[..., 2, 1], m[..., 0, 2], m[..., 1, 0]], axis=-1)


class JointAngleEkf:
    """EKF over the 22 joint angles: :meth:`predict` with gyros, :meth:`update` with vision."""

    def __init__(
        self,
        glove: GloveModel,
        config: EkfConfig | None = None,
        hand_model: HandModel | None = None,
        side: str = "right",
        hand_scale: float = 1.0,
    ):
        self.glove = glove
        self.config = config or EkfConfig()
        self.hand_model = hand_model or default_hand_model()
        self.side = side
        self.hand_scale = float(hand_scale)
        self.chains = sensor_chains(glove)
        self.mount_rotations = glove.mount_rotations(side)  # [N_s, 3, 3] sensor -> bone
        self.sensor_bones = glove.sensor_bone_indices
        self.lower = np.asarray(self.hand_model.joint_lower, dtype=float)
        self.upper = np.asarray(self.hand_model.joint_upper, dtype=float)
        self.state: np.ndarray | None = None
        self.covariance: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the track; the next :meth:`update` re-initialises from vision."""
        self.state = None
        self.covariance = None

    # ------------------------------------------------------------------ linearisation
    def _perturbed_fk(self, joint_angles: np.ndarray):
        """FK at θ and θ ± h·e_j for all j in one batched call: ``(landmarks, sensor_rotations)``."""
        step = self.config.jacobian_step_rad
        offsets = np.concatenate([np.zeros((1, NUM_JOINTS)), step * np.eye(NUM_JOINTS), -step * np.eye(NUM_JOINTS)])
        fk = forward_kinematics_numpy(
            joint_angles[None] + offsets, np.eye(3), np.zeros(3), self.hand_scale, self.side, model=self.hand_model
        )
        sensor_rotations = fk.bone_rotations[:, self.sensor_bones] @ self.mount_rotations  # [1+2J, N_s, 3, 3]
        return fk.landmarks, sensor_rotations

    def _chain_rate_maps(self, sensor_rotations: np.ndarray):
        """Per chain: ``(R_pc [3,3], A [3, |J|], G = (AᵀA+λI)⁻¹Aᵀ [|J|, 3])`` at the nominal state."""
        step = self.config.jacobian_step_rad
        maps = []
        for chain in self.chains:
            relative = np.swapaxes(sensor_rotations[:, chain.parent_sensor], -1, -2) @ sensor_rotations[:, chain.child_sensor]
            nominal = relative[0]
            columns = []
            for j in chain.joints:
                derivative = (relative[1 + j] - relative[1 + NUM_JOINTS + j]) / (2.0 * step)
                columns.append(_vee(nominal.T @ derivative))
            A = np.stack(columns, axis=1)
            G = np.linalg.solve(A.T @ A + self.config.ridge * np.eye(A.shape[1]), A.T)
            maps.append((nominal, A, G))
        return maps

    # ------------------------------------------------------------------ filter steps
    def predict(self, angular_velocity: np.ndarray, sample_dt: float, valid: np.ndarray | None = None) -> None:
        """Propagate with the gyro samples since the last frame: ``angular_velocity [n, N_s, 3]`` rad/s."""
        if self.state is None:
            return
        omega = np.asarray(angular_velocity, dtype=float).reshape(-1, self.glove.num_sensors, 3)
        live = np.isfinite(omega).all(axis=-1)
        if valid is not None:
            live = live & np.asarray(valid, dtype=bool).reshape(omega.shape[:2])
        omega = np.where(live[..., None], omega, 0.0)
        n_samples = omega.shape[0]
        interval = n_samples * sample_dt
        _, sensor_rotations = self._perturbed_fk(self.state)
        observed = np.zeros((NUM_JOINTS, NUM_JOINTS))
        delta = np.zeros(NUM_JOINTS)
        for chain, (relative, A, G) in zip(self.chains, self._chain_rate_maps(sensor_rotations)):
            usable = live[:, chain.parent_sensor] & live[:, chain.child_sensor]
            if not usable.any():
                continue
            joints = list(chain.joints)
            relative_rate = omega[:, chain.child_sensor] - omega[:, chain.parent_sensor] @ relative  # ω_c − R_pcᵀ ω_p
            rates = relative_rate[usable] @ G.T  # [n_usable, |J|]
            delta[joints] += rates.sum(axis=0) * sample_dt
            fraction = usable.mean()  # share of the interval this chain observed
            observed[np.ix_(joints, joints)] += fraction * (G @ A)
        config = self.config
        unobserved = np.eye(NUM_JOINTS) - observed
        Q = interval**2 * (config.observed_rate_noise_rad_s**2 * observed
                           + config.unobserved_rate_noise_rad_s**2 * unobserved)
        Q = 0.5 * (Q + Q.T) + config.random_walk_rad_per_sqrt_s**2 * interval * np.eye(NUM_JOINTS)
        self.state = np.clip(self.state + delta, self.lower, self.upper)
        self.covariance = self.covariance + Q

    def vision_joint_covariance(self, vision_joint_angles: np.ndarray, vision_sigma_m: np.ndarray) -> np.ndarray:
        """Joint-angle noise of the vision estimate implied by its per-landmark σ: the diagonal of
        ``(JᵀΣ_l⁻¹J)⁻¹`` with ``J = ∂FK/∂θ`` at the vision estimate (marginal variances, ``[22]``).

        Joints the landmarks barely constrain (short lever arms) get large variances; a small
        prior (``unconstrained_joint_std_rad``) keeps the inverse finite.
        """
        config = self.config
        landmarks, _ = self._perturbed_fk(np.asarray(vision_joint_angles, dtype=float))
        J = (landmarks[1 : 1 + NUM_JOINTS] - landmarks[1 + NUM_JOINTS :]) / (2.0 * config.jacobian_step_rad)
        J = J.reshape(NUM_JOINTS, -1).T  # [63, 22]
        sigma = np.maximum(np.asarray(vision_sigma_m, dtype=float) * config.measurement_sigma_scale,
                           config.measurement_sigma_floor_m)
        information = J.T @ (np.repeat(1.0 / sigma**2, 3)[:, None] * J)
        information += np.eye(NUM_JOINTS) / config.unconstrained_joint_std_rad**2
        return np.diag(np.linalg.inv(information))

    def update(self, vision_joint_angles: np.ndarray, vision_sigma_m: np.ndarray) -> np.ndarray:
        """Correct with one vision estimate (joint angles ``[22]``, per-landmark σ ``[21]`` m)."""
        vision_joint_angles = np.clip(np.asarray(vision_joint_angles, dtype=float), self.lower, self.upper)
        variance = self.vision_joint_covariance(vision_joint_angles, vision_sigma_m)
        if self.state is None:
            self.state = vision_joint_angles.copy()
            self.covariance = np.diag(variance)
            return self.state.copy()
        S = self.covariance + np.diag(variance)
        gain = np.linalg.solve(S, self.covariance).T  # P Sᵀ⁻¹ = P S⁻¹ (both symmetric)
        self.state = np.clip(self.state + gain @ (vision_joint_angles - self.state), self.lower, self.upper)
        identity_minus_gain = np.eye(NUM_JOINTS) - gain
        covariance = identity_minus_gain @ self.covariance @ identity_minus_gain.T + gain @ np.diag(variance) @ gain.T
        self.covariance = 0.5 * (covariance + covariance.T)
        return self.state.copy()


def run_ekf_on_sequence(
    glove: GloveModel,
    vision_joint_angles: np.ndarray,
    vision_sigma_m: np.ndarray,
    gyro_between_frames: list[np.ndarray] | np.ndarray,
    sample_dt: float,
    gyro_valid: list[np.ndarray] | np.ndarray | None = None,
    config: EkfConfig | None = None,
    hand_model: HandModel | None = None,
    side: str = "right",
    hand_scale: float = 1.0,
) -> np.ndarray:
    """Filter a track: ``vision_joint_angles [T, 22]``, ``vision_sigma_m [T, 21]``, and for each
    frame ``t`` the gyro samples since frame ``t − 1`` (``[n_t, N_s, 3]``; ignored for ``t = 0``).

    Returns the filtered joint angles ``[T, 22]``.
    """
    ekf = JointAngleEkf(glove, config, hand_model, side, hand_scale)
    filtered = np.zeros((len(vision_joint_angles), NUM_JOINTS))
    for t in range(len(vision_joint_angles)):
        if t > 0:
            ekf.predict(gyro_between_frames[t], sample_dt, None if gyro_valid is None else gyro_valid[t])
        filtered[t] = ekf.update(vision_joint_angles[t], vision_sigma_m[t])
    return filtered


def gyro_from_imu_window(
    features: np.ndarray, valid: np.ndarray, row_signals, token_of_feature: np.ndarray, num_sensors: int,
    last_samples: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The last ``last_samples`` gyro samples per sensor from an IMU feature window.

    ``features [T, F, 3]``, ``valid [T, F]``; returns ``(gyro [n, N_s, 3], valid [n, N_s])`` with
    sensors that have no gyro row in the feature set marked invalid.
    """
    gyro = np.zeros((last_samples, num_sensors, 3))
    gyro_valid = np.zeros((last_samples, num_sensors), dtype=bool)
    for row, (signal, sensor) in enumerate(zip(row_signals, token_of_feature)):
        if signal == "gyro":
            gyro[:, sensor] = features[-last_samples:, row]
            gyro_valid[:, sensor] = valid[-last_samples:, row]
    return gyro, gyro_valid
