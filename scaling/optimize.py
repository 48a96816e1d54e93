"""Many-start L-BFGS for the small nonlinear fits, vectorised with JAX.

Scaling-law objectives are non-convex and have long flat valleys: Hoffmann et
al.'s own Approach-3 numbers came from an optimiser that stopped early
(Besiroglu et al. 2024). So every start runs a fixed, generous number of L-BFGS
iterations instead of stopping on a gradient tolerance, and all starts (and all
bootstrap replicates, given as per-point weights) run at once under `jax.vmap`.

The work is done in float64 inside a local `jax.enable_x64` context: the loss
surfaces need more than float32's 7 digits, and the training code that shares
the process must keep its float32 default.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax


def huber(r, delta):
    """Huber's loss, quadratic within +-delta and linear outside."""
    a = jnp.abs(r)
    return jnp.where(a <= delta, 0.5 * r**2, delta * (a - 0.5 * delta))


@partial(jax.jit, static_argnames=("objective", "steps", "ls_steps"))
def _run(objective, steps, ls_steps, inits, data, weights):
    solver = optax.lbfgs(
        linesearch=optax.scale_by_zoom_linesearch(max_linesearch_steps=ls_steps))

    def one_start(theta0, w):
        fun = lambda theta: objective(theta, data, w)
        value_and_grad = optax.value_and_grad_from_state(fun)

        def step(carry, _):
            theta, state = carry
            value, grad = value_and_grad(theta, state=state)
            updates, state = solver.update(grad, state, theta, value=value, grad=grad,
                                           value_fn=fun)
            return (optax.apply_updates(theta, updates), state), None

        (theta, _), _ = jax.lax.scan(step, (theta0, solver.init(theta0)), None, length=steps)
        return theta, fun(theta)

    per_weights = jax.vmap(one_start, in_axes=(0, None))
    return jax.vmap(per_weights, in_axes=(None, 0))(inits, weights)


def minimize_multistart(objective, inits, data, weights, steps=200, ls_steps=30):
    """Minimise `objective(theta, data, w)` from every row of `inits`, for every row of `weights`.

    `objective` must be a module-level function (it is a static argument of a
    jitted function, so a new lambda per call would recompile every time).
    `data` is a tuple of per-point arrays; `weights` is (replicates, points):
    a row of ones for the plain fit, bootstrap counts for the replicates.

    Returns (thetas, values) with shapes (replicates, starts, params) and
    (replicates, starts); a start that diverged has value +inf.
    """
    with jax.enable_x64(True):
        inits = jnp.asarray(np.asarray(inits, np.float64))
        data = tuple(jnp.asarray(np.asarray(x, np.float64)) for x in data)
        weights = jnp.asarray(np.atleast_2d(np.asarray(weights, np.float64)))
        thetas, values = _run(objective, steps, ls_steps, inits, data, weights)
        thetas, values = np.asarray(thetas), np.asarray(values)
    ok = np.isfinite(values) & np.all(np.isfinite(thetas), axis=-1)
    return thetas, np.where(ok, values, np.inf)


def best_per_replicate(thetas, values):
    """The lowest-objective start of each replicate: (replicates, params), (replicates,)."""
    idx = np.argmin(values, axis=1)
    rows = np.arange(len(idx))
    return thetas[rows, idx], values[rows, idx]
