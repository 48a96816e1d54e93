"""Many-start L-BFGS for the nonlinear law fits, vectorised with JAX.

Scaling-law objectives are non-convex with long flat valleys: Hoffmann et al.'s
own Approach-3 numbers came from an optimiser that stopped early (Besiroglu et
al. 2024). So every start runs a fixed number of L-BFGS iterations rather than
stopping on a gradient tolerance, and all starts, and all bootstrap replicates
(given as per-point weights), run side by side under `jax.vmap`.

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

LANES = 64


def huber(r, delta):
    """Huber's loss: quadratic within +-delta, linear outside."""
    a = jnp.abs(r)
    return jnp.where(a <= delta, 0.5 * r**2, delta * (a - 0.5 * delta))


@functools.cache
def log_huber_objective(law):
    """Summed, weighted Huber loss between log predicted and log observed loss (Hoffmann et al.).

    `law(theta, *inputs)` returns log loss. The objective takes
    data = (*inputs, log_loss, delta). Cached so that one law gives one function
    object, and the jitted optimiser compiles once per law and shape.
    """
    def objective(theta, data, w):
        *inputs, log_loss, delta = data
        return jnp.sum(w * huber(law(theta, *inputs) - log_loss, delta))
    return objective


@functools.partial(jax.jit, static_argnames=("objective",))
def _run(objective, steps, inits, data, weights):
    # Backtracking rather than zoom line search: under vmap every lane waits
    # for the slowest, and backtracking needs far fewer evaluations (and
    # compiles in a fraction of the time) on these smooth 4-7 parameter problems.
    solver = optax.lbfgs(linesearch=optax.scale_by_backtracking_linesearch(
        max_backtracking_steps=20, decrease_factor=0.5, store_grad=True))

    def one_lane(theta0, w):
        fun = lambda theta: objective(theta, data, w)
        value_and_grad = optax.value_and_grad_from_state(fun)

        def step(_, carry):
            theta, state = carry
            value, grad = value_and_grad(theta, state=state)
            updates, state = solver.update(grad, state, theta, value=value, grad=grad,
                                           value_fn=fun)
            return optax.apply_updates(theta, updates), state

        # `steps` is traced, so screening and polishing share one compilation.
        theta, _ = jax.lax.fori_loop(0, steps, step, (theta0, solver.init(theta0)))
        return theta, fun(theta)

    return jax.vmap(one_lane)(inits, weights)


def minimize_multistart(objective, inits, data, weights, steps=200):
    """Minimise `objective(theta, data, w)` from every start, for every weight vector.

    objective: a module-level or cached function (it is a static argument of a
        jitted function; a fresh lambda per call would recompile every time).
    inits: (starts, params), the same for every replicate.
    data: tuple of arrays shared by all replicates.
    weights: (replicates, points): ones for the plain fit, bootstrap counts otherwise.

    Returns thetas (replicates, starts, params) and values (replicates, starts);
    a start that diverged has value +inf.
    """
    inits = np.asarray(inits, np.float64)
    weights = np.atleast_2d(np.asarray(weights, np.float64))
    (n_rep, _), (n_start, n_par) = weights.shape, inits.shape
    data, weights = _pad_points(data, weights)
    # Every (replicate, start) pair is a lane; lanes go through in blocks of a
    # fixed size, so each law compiles once whatever the number of starts and
    # replicates, and the slowest lane holds up only its own block.
    lane_theta = np.tile(inits, (n_rep, 1))
    lane_weights = np.repeat(weights, n_start, axis=0)
    n = len(lane_theta)
    pad = np.minimum(np.arange(-(-n // LANES) * LANES), n - 1)
    outs = []
    with jax.enable_x64(True):
        data = tuple(jnp.asarray(x) for x in data)
        for lo in range(0, len(pad), LANES):
            rows = pad[lo:lo + LANES]
            outs.append(jax.device_get(_run(objective, steps, jnp.asarray(lane_theta[rows]),
                                            data, jnp.asarray(lane_weights[rows]))))
    thetas = np.concatenate([t for t, _ in outs])[:n].reshape(n_rep, n_start, n_par)
    values = np.concatenate([v for _, v in outs])[:n].reshape(n_rep, n_start)
    ok = np.isfinite(values) & np.all(np.isfinite(thetas), axis=-1)
    return thetas, np.where(ok, values, np.inf)


def _pad_points(data, weights, multiple=64):
    """Pad the per-point arrays to a multiple of 64 points with zero-weight copies.

    Compilation (seconds) is keyed on shapes; padding lets fits of a few more
    or fewer points (a held-out subset, the other accounting) reuse it.
    """
    n = weights.shape[1]
    pad = -n % multiple
    data = [np.asarray(x, np.float64) for x in data]
    data = [np.pad(x, (0, pad), mode="edge") if x.shape == (n,) else x for x in data]
    return data, np.pad(weights, ((0, 0), (0, pad)))


def screen_then_polish(objective, grid, data, screen_steps=5, keep=64, polish_steps=200):
    """Distinct local minima from a large grid of starts, best first, for one data set.

    Every grid point gets `screen_steps` L-BFGS iterations and the `keep` best
    run `polish_steps` more; a grid of at most `keep` starts is polished
    directly. On the Epoch data, 100 full iterations from all 4,500 starts
    reach the same minimum at ~30x the cost: most of that time goes into
    starts that end far from the best.

    Returns thetas (minima, params) and objective values (minima,), one row per
    distinct minimum (starts that converged to the same value are merged), or
    raises RuntimeError when every start diverged.
    """
    ones = np.ones((1, len(data[0])))
    if len(grid) > keep:
        thetas, values = minimize_multistart(objective, grid, data, ones, steps=screen_steps)
        grid = thetas[0, np.argsort(values[0])[:keep]]
    thetas, values = minimize_multistart(objective, grid, data, ones, steps=polish_steps)
    order = np.argsort(values[0])
    thetas, values = thetas[0, order], values[0, order]
    if not np.isfinite(values[0]):
        raise RuntimeError("the fit diverged from every start")
    distinct = np.r_[True, ~np.isclose(values[1:], values[:-1], rtol=1e-7, atol=0)]
    return thetas[distinct], values[distinct]


def refit_replicates(objective, minima, data, counts, n_starts=4, steps=200):
    """Best theta of each bootstrap replicate (None where every start diverged).

    Each replicate starts from the `n_starts` best distinct minima of the full
    fit rather than from the whole grid: a resample moves the minimum, not the
    basin. np.resize repeats minima when there are fewer: a fixed number of
    starts keeps one compiled optimiser for every data set.
    """
    starts = np.resize(minima[:n_starts], (n_starts, minima.shape[1]))
    thetas, values = minimize_multistart(objective, starts, data, counts, steps=steps)
    best = np.argmin(values, axis=1)
    return [t[i] if np.isfinite(v[i]) else None for t, v, i in zip(thetas, values, best)]


def evaluate(law, theta, *inputs):
    """exp(law(theta, *inputs)) as a numpy array, computed in float64."""
    with jax.enable_x64(True):
        out = law(jnp.asarray(np.asarray(theta, np.float64)),
                  *(jnp.asarray(np.asarray(x, np.float64)) for x in inputs))
        return np.exp(np.asarray(out))
