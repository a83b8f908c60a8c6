"""Human hand landmarks -> robot hand joint positions (vector, position, DexPilot retargeting).

All three methods minimise one weighted, Huber-robust least-squares cost over the driven
joints ``q`` (docs/RETARGETING.md has the derivation and every default)::

    C(q) = sum_i  w_i * rho( | p_task_i(q) - p_origin_i(q) - t_i | )
         + sum_j  lambda_j * (q_j - q_prev_j)^2,            lower <= q <= upper

* ``p_*(q)``: robot link (or extra frame) positions from pinocchio FK, root frame;
* ``t_i``: the target vector of term ``i``.  For vector/position terms it is
  ``s * R * (x_task - x_origin)`` (human landmarks ``x``, scaling ``s``, ``R`` the human
  wrist frame -> robot root rotation); DexPilot terms move ``t_i`` and ``w_i`` with the
  human thumb-finger distance to close pinches;
* ``rho``: Huber on the vector error (quadratic below ``huber_delta``, linear above);
* ``w_i = weight_i * u_i``, ``u_i = sigma0^2 / (sigma0^2 + sigma_a^2 + sigma_b^2)`` the
  uncertainty weight of a term between landmarks ``a`` and ``b`` (1 without sigmas);
* ``lambda_j = regularization + prior_gain * l_j``: a pull towards the previous solution,
  where ``l_j`` is the confidence lost (``1 - min(1, 2 u_i)``) by the terms that joint ``j``
  moves.  An occluded (high-sigma) fingertip therefore pulls less and its finger holds still.

Solver: projected Levenberg-Marquardt with analytic Jacobians (pinocchio
``computeJointJacobians``/``getFrameJacobian``), Huber by iteratively re-weighted least
squares, box constraints by an active set (joints at a bound whose gradient points outward
are frozen) and projection, warm-started from the previous frame.  The result is clipped
into the (mimic-consistent) joint limits, then optionally low-pass filtered (a convex
combination of in-limit vectors stays in the limits).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.linalg.lapack import dposv as _posv

from avi_ht_ros.common.errors import AviHtError
from avi_ht_ros.common.hand_model import LANDMARK_INDEX, LANDMARK_NAMES, NUM_LANDMARKS
from avi_ht_ros.retarget.config import METHODS, RetargetConfig, TaskTerm, load_retarget_config
from avi_ht_ros.retarget.kinematics import JointCoupling, RobotHandKinematics

_MIRROR = np.diag([1.0, -1.0, 1.0])
#: Rejected Levenberg-Marquardt steps tried per iteration before the frame gives up (the
#: next frame continues from the best point, warm-started).
_MAX_REJECTIONS = 4
#: Damping bounds (relative to diag(H)): floor while steps succeed, and the least damping
#: tried after a rejected step (a rejected Gauss-Newton step needs real damping, not a
#: slow doubling from ~0).
_MU_MIN = 1e-5
_MU_REJECT = 1e-2


class RetargetInputError(AviHtError):
    """The landmarks (or sigmas, wrist rotation) given to :meth:`Retargeter.retarget` are unusable."""


@dataclass
class RetargetInfo:
    """Diagnostics of the last :meth:`Retargeter.retarget` call."""

    iterations: int
    cost: float
    term_weights: np.ndarray  # [m] effective weights w_i (before Huber)
    joint_prior: np.ndarray  # [n_driven] lambda_j
    dropped_landmarks: tuple[str, ...]
    converged: bool
    unfiltered: np.ndarray  # full joint vector before the low-pass filter


def uncertainty_weights(sigma: np.ndarray, origin: np.ndarray, task: np.ndarray, sigma0: float) -> np.ndarray:
    """``sigma0^2 / (sigma0^2 + sigma[origin]^2 + sigma[task]^2)`` per term (non-finite sigma -> 0)."""
    variance = np.square(np.asarray(sigma, dtype=float))
    total = sigma0 ** 2 + variance[origin] + variance[task]
    with np.errstate(invalid="ignore", over="ignore"):
        weights = np.where(np.isfinite(total), sigma0 ** 2 / total, 0.0)
    return weights


def estimate_wrist_rotation(landmarks: np.ndarray, side: str = "right") -> np.ndarray:
    """Wrist frame (x distal, z dorsal, docs/ARCHITECTURE.md) estimated from 21 landmarks.

    x points from the wrist to the middle MCP; y from the pinky MCP to the index MCP
    (radial) for a right hand, the opposite (ulnar) for a left hand, orthogonalised.
    Returns the rotation wrist frame -> the landmarks' frame.  Prefer the tracker's wrist
    pose when there is one (HandPose.wrist_pose).
    """
    points = np.asarray(landmarks, dtype=float)
    x = points[LANDMARK_INDEX["middle_mcp"]] - points[LANDMARK_INDEX["wrist"]]
    radial = points[LANDMARK_INDEX["index_mcp"]] - points[LANDMARK_INDEX["pinky_mcp"]]
    y = radial if side == "right" else -radial
    x_norm = np.linalg.norm(x)
    z = np.cross(x, y)
    z_norm = np.linalg.norm(z)
    if not (np.isfinite(x_norm) and np.isfinite(z_norm)) or x_norm < 1e-9 or z_norm < 1e-12:
        raise RetargetInputError("landmarks: degenerate palm (wrist, middle/index/pinky MCP), cannot estimate the wrist frame")
    x = x / x_norm
    z = z / z_norm
    return np.stack([x, np.cross(z, x), z], axis=1)


class LowPassFilter:
    """Exponential smoothing ``y += alpha * (x - y)`` per call (alpha = 1: pass-through)."""

    def __init__(self, alpha: float):
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"low-pass alpha must be in (0, 1], got {alpha}")
        self.alpha = float(alpha)
        self.state: np.ndarray | None = None

    def __call__(self, value: np.ndarray) -> np.ndarray:
        if self.state is None or self.alpha >= 1.0:
            self.state = np.array(value, dtype=float)
        else:
            self.state = self.state + self.alpha * (value - self.state)
        return self.state.copy()

    def reset(self, value: np.ndarray | None = None) -> None:
        self.state = None if value is None else np.array(value, dtype=float)


class _TermSet:
    """Index arrays of the task terms of one method (frames deduplicated)."""

    def __init__(self, kinematics: RobotHandKinematics, coupling: JointCoupling,
                 origin_landmarks, task_landmarks, origin_links, task_links, weights):
        links = list(dict.fromkeys(list(origin_links) + list(task_links)))
        self.frame_names = tuple(links)
        self.frame_ids = [kinematics.frame_id(name) for name in links]
        self.origin_frame = np.array([links.index(n) for n in origin_links], dtype=int)
        self.task_frame = np.array([links.index(n) for n in task_links], dtype=int)
        self.origin_landmark = np.asarray(origin_landmarks, dtype=int)
        self.task_landmark = np.asarray(task_landmarks, dtype=int)
        self.weight = np.asarray(weights, dtype=float)
        # [m, n_driven]: driven joint j moves the vector of term i.
        support = kinematics.joint_support_mask(self.frame_ids).astype(float)
        full = np.maximum(support[self.origin_frame], support[self.task_frame])
        self.moves = (full @ np.abs(coupling.matrix)) > 0
        self.count = len(self.weight)


class Retargeter:
    """Stateful retargeter of one robot hand (warm start, solver damping, low-pass filter).

    Args:
        config: a validated :class:`~avi_ht_ros.retarget.config.RetargetConfig`.
        method: ``vector``, ``position`` or ``dexpilot`` (default: ``config.method``).
        kinematics: reuse an already loaded robot (must match ``config.urdf_path``).
    """

    def __init__(self, config: RetargetConfig, method: str | None = None,
                 kinematics: RobotHandKinematics | None = None):
        method = method or config.method
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.config = config
        self.method = method
        self.kinematics = kinematics or RobotHandKinematics(config.urdf_path, config.extra_frames)
        kin = self.kinematics
        self.coupling = JointCoupling(kin, config.driven_joints, config.mimic_joints,
                                      dict(config.fixed_joint_positions), where=config.source)
        wrist_id = kin.frame_id(config.wrist_link)
        root_from_wrist_link, _ = kin.frame_placement(kin.neutral(), wrist_id)
        mirror = _MIRROR if config.mirror else np.eye(3)
        #: human wrist frame -> robot root frame (vectors).
        self.human_to_robot = root_from_wrist_link @ config.wrist_to_robot @ mirror

        if method in ("vector", "position"):
            terms: tuple[TaskTerm, ...] = config.terms(method)
            if not terms:
                raise ValueError(f"{config.source}: no retargeting.{method} terms configured")
            self.terms = _TermSet(kin, self.coupling, [t.origin_landmark for t in terms],
                                  [t.task_landmark for t in terms], [t.origin_link for t in terms],
                                  [t.task_link for t in terms], [t.weight for t in terms])
            self._n_pinch = self._n_separation = 0
        else:
            dp = config.dexpilot
            if dp is None:
                raise ValueError(f"{config.source}: no retargeting.dexpilot section configured")
            self.terms, self._n_pinch, self._n_separation = self._dexpilot_terms(dp)
        self.lower, self.upper = self.coupling.lower, self.coupling.upper
        # Term vectors as a signed selection of frame positions: e = D @ p - t.  Frames fixed
        # to the root (e.g. the palm) have constant positions and zero Jacobians, so only
        # the moving frames are evaluated; the static ones fold into a constant.
        ts = self.terms
        selection = np.zeros((ts.count, len(ts.frame_ids)))
        selection[np.arange(ts.count), ts.task_frame] += 1.0
        selection[np.arange(ts.count), ts.origin_frame] -= 1.0
        moving = np.array([kin.frame_parent_joint(i) != 0 for i in ts.frame_ids])
        static_positions = kin.frame_positions(kin.neutral(), ts.frame_ids)
        self._moving_ids = [i for i, m in zip(ts.frame_ids, moving) if m]
        self._moving_selection = selection[:, moving]
        self._static_vectors = selection[:, ~moving] @ static_positions[~moving]
        self._diag = {k: np.diag_indices(k) for k in range(self.coupling.n_driven + 1)}
        self._ones = np.ones(self.terms.count)
        self._scaled_human_to_robot_t = config.scaling_factor * self.human_to_robot.T
        self._all_valid = np.ones(NUM_LANDMARKS, dtype=bool)
        self._all_valid.setflags(write=False)
        self._base_prior = np.full(self.coupling.n_driven, config.solver.regularization)
        # Human term vectors as one matrix product: D [m, 21] @ landmarks.
        self._human_selection = np.zeros((self.terms.count, NUM_LANDMARKS))
        self._human_selection[np.arange(self.terms.count), self.terms.task_landmark] += 1.0
        self._human_selection[np.arange(self.terms.count), self.terms.origin_landmark] -= 1.0
        self._filter = LowPassFilter(config.low_pass_alpha)
        self.last_info: RetargetInfo | None = None
        self.reset()

    # ------------------------------------------------------------------ public API
    @property
    def joint_names(self) -> tuple[str, ...]:
        """Names of the returned joint vector (every movable URDF joint, pinocchio order)."""
        return self.kinematics.joint_names

    @property
    def driven_joint_names(self) -> tuple[str, ...]:
        return self.coupling.driven_names

    def reset(self, q: np.ndarray | None = None) -> None:
        """Forget the history; warm start from ``q`` (full joint vector) or the zero pose."""
        full = self.kinematics.neutral() if q is None else np.asarray(q, dtype=float)
        self._q_prev = np.clip(self.coupling.driven(full), self.lower, self.upper)
        self._first = True
        self._mu = self.config.solver.damping
        self._filter.reset()

    def retarget(self, landmarks: np.ndarray, sigma: np.ndarray | None = None,
                 wrist_rotation: np.ndarray | None = None) -> np.ndarray:
        """One frame: 21 landmarks -> full robot joint vector (``joint_names`` order).

        Args:
            landmarks: ``[21, 3]`` m, MediaPipe order, in any frame.
            sigma: ``[21]`` m, isotropic 1-sigma uncertainty per landmark (HandPose.landmark_sigma);
                None = all certain.  Non-finite sigma = landmark unusable (weight 0).
            wrist_rotation: ``[3, 3]`` human wrist frame -> landmarks' frame
                (HandPose.wrist_pose); None = the landmarks are already in the wrist frame.

        Raises:
            RetargetInputError: wrong shapes; non-finite or absurd landmarks when
                ``invalid_landmarks: reject`` (with ``drop`` they only lose their terms).
        """
        points, valid = self._validate(landmarks, sigma, wrist_rotation)
        all_valid = valid.all()
        if not all_valid:
            points = np.where(valid[:, None], points, 0.0)
        if wrist_rotation is not None:
            points = points @ np.asarray(wrist_rotation, dtype=float)  # row-wise R^T x
        ts = self.terms
        if (sigma is None or not self.config.uncertainty.enabled) and all_valid:
            u = self._ones  # every term fully trusted: no lost weight, constant prior
            targets, weights = self._targets_and_weights(points, u)
            effective, prior = weights, self._base_prior
        else:
            sigma_used = np.zeros(NUM_LANDMARKS)
            if sigma is not None and self.config.uncertainty.enabled:
                sigma_used[:] = sigma
            sigma_used[~valid] = np.inf
            u = uncertainty_weights(sigma_used, ts.origin_landmark, ts.task_landmark, self.config.uncertainty.sigma0)
            targets, weights = self._targets_and_weights(points, u)
            effective = weights * u
            prior = self._joint_prior(weights, u)
        iterations = self.config.solver.first_frame_iterations if self._first else self.config.solver.max_iterations
        q, cost, used, converged = self._solve(targets, effective, prior, self._q_prev, iterations)
        q = _clip(q, self.lower, self.upper)
        self._q_prev = q
        self._first = False
        out = _clip(self._filter(q), self.lower, self.upper)
        self.last_info = RetargetInfo(used, cost, effective, prior,
                                      tuple(LANDMARK_NAMES[i] for i in np.flatnonzero(~valid)), converged,
                                      self.coupling.full(q))
        return self.coupling.full(out)

    def robot_vectors(self, q_full: np.ndarray) -> np.ndarray:
        """``[m, 3]`` robot task vectors (root frame) of this method's terms at ``q_full``."""
        positions = self.kinematics.frame_positions(q_full, self.terms.frame_ids)
        return positions[self.terms.task_frame] - positions[self.terms.origin_frame]

    def target_vectors(self, landmarks: np.ndarray, wrist_rotation: np.ndarray | None = None) -> np.ndarray:
        """``[m, 3]`` target vectors of this method's terms for a landmark set (no state change)."""
        points = np.asarray(landmarks, dtype=float)
        if wrist_rotation is not None:
            points = points @ np.asarray(wrist_rotation, dtype=float)
        if self.method == "dexpilot":
            return self._dexpilot_targets(points, np.ones(self.terms.count))[0]
        return self._plain_targets(points)

    # ------------------------------------------------------------------ input checks
    def _validate(self, landmarks, sigma, wrist_rotation) -> tuple[np.ndarray, np.ndarray]:
        points = np.asarray(landmarks, dtype=float)
        if points.shape != (NUM_LANDMARKS, 3):
            raise RetargetInputError(f"landmarks: shape {points.shape}, expected ({NUM_LANDMARKS}, 3)")
        if sigma is not None:
            s = np.asarray(sigma, dtype=float)
            if s.shape != (NUM_LANDMARKS,):
                raise RetargetInputError(f"sigma: shape {s.shape}, expected ({NUM_LANDMARKS},)")
            if np.any(s < 0):
                raise RetargetInputError(f"sigma: negative values for {_names(s < 0)}")
        if wrist_rotation is not None:
            r = np.asarray(wrist_rotation, dtype=float)
            if r.shape != (3, 3) or not np.all(np.isfinite(r)) or np.abs(r @ r.T - np.eye(3)).max() > 1e-3:
                raise RetargetInputError("wrist_rotation: expected a finite 3x3 rotation matrix")
        wrist = LANDMARK_INDEX["wrist"]
        limit = self.config.max_landmark_distance
        with np.errstate(over="ignore", invalid="ignore"):
            offsets = points - points[wrist]
            if np.abs(offsets).max() <= limit / 1.7320508075688772:  # fast path: finite and near
                return points, self._all_valid
            valid = np.all(np.isfinite(points), axis=1) & (np.sqrt(np.einsum("ij,ij->i", offsets, offsets)) <= limit)
        if not valid.all():
            if self.config.invalid_landmarks == "reject" or not valid[wrist]:
                raise RetargetInputError(
                    f"landmarks: non-finite or farther than max_landmark_distance="
                    f"{limit} m from the wrist: {_names(~valid)}")
        return points, valid

    # ------------------------------------------------------------------ targets
    def _plain_targets(self, points: np.ndarray) -> np.ndarray:
        return (self._human_selection @ points) @ self._scaled_human_to_robot_t

    def _targets_and_weights(self, points: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.method == "dexpilot":
            return self._dexpilot_targets(points, u)
        return self._plain_targets(points), self.terms.weight

    def _dexpilot_terms(self, dp) -> tuple[_TermSet, int, int]:
        """Thumb->finger pinch terms, finger->finger separation terms, wrist->tip terms."""
        n = len(dp.fingertip_links)
        wrist = LANDMARK_INDEX["wrist"]
        origins_l, tasks_l, origins_k, tasks_k, weights = [], [], [], [], []
        for j in range(1, n):  # thumb -> finger j
            origins_l.append(dp.fingertip_landmarks[0]); tasks_l.append(dp.fingertip_landmarks[j])
            origins_k.append(dp.fingertip_links[0]); tasks_k.append(dp.fingertip_links[j])
            weights.append(1.0)
        self._separation_pairs = []
        for a in range(1, n):
            for b in range(a + 1, n):  # finger a -> finger b
                origins_l.append(dp.fingertip_landmarks[a]); tasks_l.append(dp.fingertip_landmarks[b])
                origins_k.append(dp.fingertip_links[a]); tasks_k.append(dp.fingertip_links[b])
                weights.append(1.0)
                self._separation_pairs.append((a - 1, b - 1))
        for j in range(n):  # wrist -> tip j
            origins_l.append(wrist); tasks_l.append(dp.fingertip_landmarks[j])
            origins_k.append(self.config.wrist_link); tasks_k.append(dp.fingertip_links[j])
            weights.append(dp.wrist_weight)
        terms = _TermSet(self.kinematics, self.coupling, origins_l, tasks_l, origins_k, tasks_k, weights)
        self._sep_a = np.array([p[0] for p in self._separation_pairs], dtype=int)
        self._sep_b = np.array([p[1] for p in self._separation_pairs], dtype=int)
        return terms, n - 1, len(self._separation_pairs)

    def _dexpilot_targets(self, points: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pinch closing with a continuous ramp instead of DexPilot's on/off switch.

        ``r_k = clip((escape - d_k) / (escape - project), 0, 1)`` for the human thumb-finger
        distance ``d_k``: 0 far apart, 1 at or below ``project_distance``.  The pinch term's
        target length blends from ``s * d_k`` to ``pinch_distance`` and its weight from 1 to
        ``pinch_weight``; two fingers both pinching (``r = min(r_a, r_b)``) are kept at least
        ``separation_distance`` apart with weight up to ``separation_weight``.  The weight
        blends geometrically (``pinch_weight ** r``), so the pinch pull stays weak until the
        human pinch is nearly closed.
        """
        dp = self.config.dexpilot
        ts = self.terms
        s = self.config.scaling_factor
        human_robot = (self._human_selection @ points) @ self.human_to_robot.T  # rotated, unscaled
        distance = np.sqrt(np.einsum("ij,ij->i", human_robot, human_robot))
        direction = human_robot / np.maximum(distance, 1e-9)[:, None]
        targets = s * human_robot
        weights = ts.weight.copy()
        npinch, nsep = self._n_pinch, self._n_separation
        ramp = _clip((dp.escape_distance - distance[:npinch]) / (dp.escape_distance - dp.project_distance), 0.0, 1.0)
        # Pinch confidence min(1, 2 u): 1 while sigma_a^2 + sigma_b^2 <= sigma0^2, so normal
        # tracking noise closes pinches fully but an uncertain fingertip cannot trigger one.
        ramp = ramp * np.minimum(1.0, 2.0 * u[:npinch])
        length = (1.0 - ramp) * s * distance[:npinch] + ramp * dp.pinch_distance
        targets[:npinch] = direction[:npinch] * length[:, None]
        weights[:npinch] = dp.pinch_weight ** ramp
        if nsep:
            sep = slice(npinch, npinch + nsep)
            both = np.minimum(ramp[self._sep_a], ramp[self._sep_b])
            plain = s * distance[sep]
            length = (1.0 - both) * plain + both * np.maximum(plain, dp.separation_distance)
            targets[sep] = direction[sep] * length[:, None]
            weights[sep] = dp.separation_weight ** both
        return targets, weights

    # ------------------------------------------------------------------ prior
    def _joint_prior(self, weights: np.ndarray, u: np.ndarray) -> np.ndarray:
        """``lambda_j = regularization + prior_gain * (lost confidence fraction of joint j)``.

        A term's lost confidence is ``1 - min(1, 2 u_i)``: zero while its landmarks' combined
        variance is within ``sigma0^2`` (normal tracking noise must not make the robot lag),
        rising to 1 as ``u_i -> 0``; averaged over the terms each joint moves, weighted by
        their nominal weights.
        """
        reg = self.config.solver.regularization
        nominal = self.terms.moves * weights[:, None]  # [m, n]
        total = nominal.sum(axis=0)
        lost = (np.maximum(0.0, 1.0 - 2.0 * u)[:, None] * nominal).sum(axis=0)
        fraction = np.divide(lost, total, out=np.zeros_like(lost), where=total > 0)
        return reg + self.config.uncertainty.prior_gain * fraction

    # ------------------------------------------------------------------ solver
    def _residuals(self, q: np.ndarray, targets: np.ndarray):
        """Term errors ``[m, 3]`` and their Jacobians ``[m * 3, n_driven]`` at driven ``q``."""
        positions, jac = self.kinematics.frame_positions_and_jacobians(self.coupling.full(q), self._moving_ids)
        errors = self._moving_selection @ positions + (self._static_vectors - targets)
        jac = self.coupling.chain_jacobian(jac)
        return errors, (self._moving_selection @ jac.reshape(len(positions), -1)).reshape(-1, jac.shape[-1])

    def _huber(self, errors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Huber loss ``rho`` of each term's error norm ``e`` and its IRLS weight ``rho'(e) / 2e``.

        ``irls = min(1, delta / e)`` and ``rho = irls (2 - irls) e^2`` (= e^2 inside,
        ``2 delta e - delta^2`` outside the quadratic zone).
        """
        squared = np.einsum("ij,ij->i", errors, errors)
        delta = self.config.solver.huber_delta
        if delta <= 0:
            return squared, np.ones_like(squared)
        irls = np.minimum(1.0, delta / np.sqrt(np.maximum(squared, 1e-300)))
        return irls * (2.0 - irls) * squared, irls

    def _box_step(self, hessian: np.ndarray, gradient: np.ndarray, q: np.ndarray, mu: float) -> np.ndarray:
        """Minimise the damped quadratic model over the joint box (small active-set loop).

        Joints at a bound whose gradient points outward start frozen; a free joint whose
        Newton step leaves the box is fixed at that bound and the rest re-solved, so the
        step is the model's minimiser on the face it ends on (no blind clipping).
        The damped system ``H + mu (diag(H) + 1e-9)`` is symmetric positive definite
        (``H = J^T W J + diag(lambda)``), solved by Cholesky (LAPACK ``posv``).
        """
        lower_step, upper_step = self.lower - q, self.upper - q
        system = hessian.copy()
        stride = len(q) + 1
        system.flat[::stride] = hessian.flat[::stride] * (1.0 + mu) + (1e-9 * mu + 1e-12)
        frozen = ((lower_step >= 0) & (gradient > 0)) | ((upper_step <= 0) & (gradient < 0))
        if not np.count_nonzero(frozen):  # common case: one solve
            step = -_spd_solve(system, gradient)
            if not np.count_nonzero((step < lower_step) | (step > upper_step)):
                return q + step
        step = np.zeros(len(q))
        index = np.flatnonzero(~frozen)
        while len(index):
            rhs = gradient[index] + hessian[index] @ step  # step is non-zero on fixed joints only
            free_step = -_spd_solve(system[index][:, index], rhs)
            low, high = lower_step[index], upper_step[index]
            out = (free_step < low) | (free_step > high)
            if not np.count_nonzero(out):
                step[index] = free_step
                break
            step[index[out]] = _clip(free_step[out], low[out], high[out])
            index = index[~out]
        return _clip(q + step, self.lower, self.upper)

    def _solve(self, targets, weights, prior, q_prev, max_iterations):
        """Projected Levenberg-Marquardt; returns (q, cost, iterations, converged).

        Cost ``C = sum_i w_i rho(e_i) + sum_j lambda_j dq_j^2``; with IRLS weights its
        Gauss-Newton model is ``C + 2 g.s + s.H.s`` (``g = J^T W e + lambda dq``,
        ``H = J^T W J + diag(lambda)``).  Damping follows Nielsen's gain-ratio rule and
        carries over between frames (consecutive problems are alike).
        """
        n = len(q_prev)
        q = _clip(q_prev, self.lower, self.upper)
        errors, jac = self._residuals(q, targets)
        rho, irls = self._huber(errors)
        cost = float(weights @ rho)  # the prior term is zero at q = q_prev
        mu, nu = self._mu, 2.0
        tol = self.config.solver.step_tolerance
        diagonal = self._diag[n]
        iteration, converged = 0, False
        for iteration in range(1, max_iterations + 1):
            wj = np.repeat(weights * irls, 3)[:, None] * jac  # IRLS weights of the Huber loss
            hessian = jac.T @ wj
            hessian[diagonal] += prior
            gradient = wj.T @ errors.reshape(-1) + prior * (q - q_prev)
            for _attempt in range(_MAX_REJECTIONS + 1):
                q_new = self._box_step(hessian, gradient, q, mu)
                step = q_new - q
                if np.abs(step).max() < tol:
                    # Converged: a step this small cannot change the command noticeably.
                    self._mu = mu
                    return q_new, cost, iteration, True
                errors_new, jac_new = self._residuals(q_new, targets)
                rho_new, irls_new = self._huber(errors_new)
                dq = q_new - q_prev
                cost_new = float(weights @ rho_new + prior @ (dq * dq))
                if cost_new <= cost:
                    predicted = -(2.0 * gradient @ step + step @ hessian @ step)
                    ratio = (cost - cost_new) / predicted if predicted > 0 else 1.0
                    mu = min(max(mu * max(1.0 / 3.0, 1.0 - (2.0 * ratio - 1.0) ** 3), _MU_MIN), 1e8)
                    break
                mu = max(mu * nu, _MU_REJECT)
                nu *= 2.0
            else:  # no descent with growing damping: keep the best point of this frame
                self._mu = min(mu, 1e2)
                return q, cost, iteration, False
            decrease = cost - cost_new
            q, errors, jac, irls, cost = q_new, errors_new, jac_new, irls_new, cost_new
            nu = 2.0
            if decrease <= self.config.solver.cost_tolerance * max(cost, 1e-12):
                converged = True
                break
        self._mu = min(max(mu, _MU_MIN), 1e2)
        return q, cost, iteration, converged


def _spd_solve(matrix: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve a symmetric positive-definite system (Cholesky), least squares if it is not."""
    _, solution, info = _posv(matrix, rhs, lower=False, overwrite_a=False, overwrite_b=False)
    if info != 0:
        return np.linalg.lstsq(matrix, rhs, rcond=None)[0]
    return solution


def _clip(values, lower, upper) -> np.ndarray:
    """``np.clip`` without its dispatch overhead (hot path; arrays of ~16 values)."""
    return np.minimum(np.maximum(values, lower), upper)


def _names(mask: np.ndarray) -> list[str]:
    return [LANDMARK_NAMES[i] for i in np.flatnonzero(mask)]


def load_retargeter(path: str | Path, method: str | None = None) -> Retargeter:
    """Retargeter from a YAML config file (``config/retarget_<robot>.yaml``)."""
    return Retargeter(load_retarget_config(path), method)
