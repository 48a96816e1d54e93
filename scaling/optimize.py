"""Optimisers for the nonlinear law fits: a converged bounded polish, and Hoffmann et al.'s multistart.

Every law here is fitted by minimising a weighted sum of Huber losses between
log predicted and log observed loss (Hoffmann et al. 2022). Two optimisers:

- `polish`: scipy's L-BFGS-B with bounds, run to convergence (not a fixed step
  count) from a given start, the gradient from JAX. The fits start it from
  the few best points of a variable-projection grid (scaling/projection.py),
  so it only has to finish the job, and its result does not depend on how
  many iterations happened to be allowed.
- `minimize_multistart`: L-BFGS from every point of a large grid of starts,
  vectorised with `jax.vmap`; with Hoffmann et al.'s 4,500 starts this is
  their procedure, kept for reproducing papers (`fit_chinchilla(method='hoffmann')`).

Work is done in float64 inside a local `jax.enable_x64` context: the loss
surfaces need more than float32's 7 digits, and the training code that shares
the process must keep its float32 default.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.optimize
from threadpoolctl import threadpool_limits

LANES = 64


def huber(r, delta, xp=jnp):
    """Huber's loss: quadratic within +-delta, linear outside; xp=np for numpy arrays."""
    a = abs(r)
    return xp.where(a <= delta, 0.5 * r**2, delta * (a - 0.5 * delta))


@functools.cache
def log_huber_objective(law):
    """Summed, weighted Huber loss between log predicted and log observed loss (Hoffmann et al.).

    `law(theta, *consts, *inputs)` returns log loss. The objective is
    objective(theta, consts, points, w) with consts = (delta, *law constants)
    and points = (*inputs, log_loss), one value per point. Cached so that one
    law gives one function object, and the jitted optimisers compile once per
    law and shape.
    """
    def objective(theta, consts, points, w):
        delta, *law_consts = consts
        *inputs, log_loss = points
        return jnp.sum(w * huber(law(theta, *law_consts, *inputs) - log_loss, delta))
    return objective


@functools.cache
def _value_and_grad(objective):
    return jax.jit(jax.value_and_grad(objective))


@functools.cache
def _jacobian(law):
    return jax.jit(jax.jacfwd(law))


def _pad_points(points, weights, multiple=64):
    """Pad the per-point arrays to a multiple of 64 points with zero-weight copies.

    Compilation (about a second per law) is keyed on shapes; padding lets fits
    of a few more or fewer points (a held-out subset, the other accounting)
    reuse it.
    """
    weights = np.atleast_2d(np.asarray(weights, np.float64))
    pad = -weights.shape[1] % multiple
    points = tuple(np.pad(np.asarray(x, np.float64), (0, pad), mode="edge") for x in points)
    return points, np.pad(weights, ((0, 0), (0, pad)))


def _device(arrays):
    return tuple(jnp.asarray(np.asarray(x, np.float64)) for x in arrays)


def single_threaded(function):
    """Runs `function` with BLAS on one thread.

    The fits' linear algebra is on 3 x 3 to 7 x 7 matrices; OpenBLAS wakes its
    thread pool for each, which costs about 6 ms a call on this machine
    (L-BFGS-B's own step takes 0.1 ms single-threaded), and far more when
    other processes hold the cores.
    """
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with threadpool_limits(limits=1, user_api="blas"):
            return function(*args, **kwargs)
    return wrapper


def polish(objective, theta0, consts, points, weights, bounds, scale=1.0):
    """Minimise `objective(theta, consts, points, w)` from theta0 within `bounds` by L-BFGS-B.

    Runs to convergence (relative decrease below 1e-14 or a vanishing
    projected gradient), not for a fixed number of steps. scale: the objective
    is multiplied by it while optimising, so that the tolerances act on a
    value of order one; the returned value is unscaled. Returns (theta, value);
    value is +inf when the objective is not finite there.
    """
    points, weights = _pad_points(points, weights)
    value_and_grad = _value_and_grad(objective)
    with jax.enable_x64(True):
        consts, points, w = _device(consts), _device(points), jnp.asarray(weights[0])

        def fun(x):
            value, grad = value_and_grad(jnp.asarray(x), consts, points, w)
            value, grad = float(value) * scale, np.asarray(grad, np.float64) * scale
            if not (np.isfinite(value) and np.all(np.isfinite(grad))):
                return np.inf, np.zeros_like(grad)
            return value, grad

        low, high = np.array(bounds, np.float64).T
        result = scipy.optimize.minimize(fun, np.clip(np.asarray(theta0, np.float64), low, high),
                                         jac=True, method="L-BFGS-B", bounds=bounds,
                                         options={"maxiter": 5000, "maxfun": 20000, "ftol": 1e-14,
                                                  "gtol": 1e-11, "maxcor": 30})
        value = float(value_and_grad(jnp.asarray(result.x), consts, points, w)[0])
    return result.x, (value if np.isfinite(value) else np.inf)


def log_jacobian(law, theta, *inputs):
    """d law(theta, *inputs) / d theta at every point: (points, params), in float64."""
    with jax.enable_x64(True):
        return np.asarray(_jacobian(law)(jnp.asarray(np.asarray(theta, np.float64)), *_device(inputs)))


@functools.partial(jax.jit, static_argnames=("objective",))
def _run(objective, steps, inits, consts, points, weights):
    # Backtracking rather than zoom line search: under vmap every lane waits
    # for the slowest, and backtracking needs far fewer evaluations (and
    # compiles in a fraction of the time) on these smooth 4-7 parameter problems.
    solver = optax.lbfgs(linesearch=optax.scale_by_backtracking_linesearch(
        max_backtracking_steps=20, decrease_factor=0.5, store_grad=True))

    def one_lane(theta0, w):
        fun = lambda theta: objective(theta, consts, points, w)
        value_and_grad = optax.value_and_grad_from_state(fun)

        def step(_, carry):
            theta, state = carry
            value, grad = value_and_grad(theta, state=state)
            updates, state = solver.update(grad, state, theta, value=value, grad=grad,
                                           value_fn=fun)
            return optax.apply_updates(theta, updates), state

        theta, _ = jax.lax.fori_loop(0, steps, step, (theta0, solver.init(theta0)))
        return theta, fun(theta)

    return jax.vmap(one_lane)(inits, weights)


def minimize_multistart(objective, inits, consts, points, weights, steps=200):
    """L-BFGS for `steps` iterations from every start, for every weight vector (JAX, vectorised).

    objective: from `log_huber_objective` (it is a static argument of a jitted
        function; a fresh function per call would recompile every time).
    inits: (starts, params), the same for every replicate.
    consts, points: as `log_huber_objective` takes them.
    weights: (replicates, points): ones for the plain fit, bootstrap counts otherwise.

    Returns thetas (replicates, starts, params) and values (replicates, starts);
    a start that diverged has value +inf.
    """
    inits = np.asarray(inits, np.float64)
    weights = np.atleast_2d(np.asarray(weights, np.float64))
    (n_rep, _), (n_start, n_par) = weights.shape, inits.shape
    points, weights = _pad_points(points, weights)
    # Every (replicate, start) pair is a lane; lanes go through in blocks of a
    # fixed size, so each law compiles once whatever the number of starts and
    # replicates, and the slowest lane holds up only its own block.
    lane_theta = np.tile(inits, (n_rep, 1))
    lane_weights = np.repeat(weights, n_start, axis=0)
    n = len(lane_theta)
    pad = np.minimum(np.arange(-(-n // LANES) * LANES), n - 1)
    outs = []
    with jax.enable_x64(True):
        consts, points = _device(consts), _device(points)
        for lo in range(0, len(pad), LANES):
            rows = pad[lo:lo + LANES]
            outs.append(jax.device_get(_run(objective, steps, jnp.asarray(lane_theta[rows]),
                                            consts, points, jnp.asarray(lane_weights[rows]))))
    thetas = np.concatenate([t for t, _ in outs])[:n].reshape(n_rep, n_start, n_par)
    values = np.concatenate([v for _, v in outs])[:n].reshape(n_rep, n_start)
    ok = np.isfinite(values) & np.all(np.isfinite(thetas), axis=-1)
    return thetas, np.where(ok, values, np.inf)


def evaluate(law, theta, *inputs):
    """exp(law(theta, *inputs)) as a numpy array, computed in float64."""
    with jax.enable_x64(True):
        return np.exp(np.asarray(law(jnp.asarray(np.asarray(theta, np.float64)), *_device(inputs))))
