"""The nonlinear loss laws, as log-loss functions of a parameter vector (JAX).

Each law is written once, in log space, and serves both the fitting objective
and `predict` (via `optimize.evaluate`): the fits compare log losses
(Hoffmann et al.), and the parameters that span orders of magnitude (A, B, N_c)
are fitted as logs.
"""
from __future__ import annotations

import functools

import jax.numpy as jnp


def chinchilla(theta, log_n, log_d):
    """Hoffmann et al.: L = E + A/N^alpha + B/D^beta; theta = (log A, log B, log E, alpha, beta)."""
    a, b, e, alpha, beta = theta
    # A plain log of a sum, not a max-shifted log-sum-exp: it is the inner loop
    # of every fit and costs half as much. Overflow needs exponents above 700,
    # far outside the starting grid; such a trial step comes out inf or NaN,
    # and the line search rejects it.
    return jnp.log(jnp.exp(a - alpha * log_n) + jnp.exp(b - beta * log_d) + jnp.exp(e))


def chinchilla_centred(theta, log_n, log_d):
    """The same law about the data's centre: theta = (E, a, b, alpha, beta), log_n = ln N - c_N, ...

    a = A e^(-alpha c_N) is the N term's size at the centre, so changing alpha
    no longer rescales it by N^-alpha ~ e^(-20 alpha): the polish works in
    coordinates whose effects on the fit are nearly independent.
    """
    e, a, b, alpha, beta = theta
    return jnp.log(e + a * jnp.exp(-alpha * log_n) + b * jnp.exp(-beta * log_d))


def kaplan_centred(theta, log_n, log_d):
    """KM's joint law about the data's centre (log_n = ln N - c_N, ...): theta = (U, V, alpha_N, alpha_D).

    U = alpha_N (ln N_c - c_N) and V = alpha_D (ln D_c - c_D) are the logs of
    the N-only and D-only losses at the centre: of order one, whatever the
    exponents, where N_c and D_c themselves move by orders of magnitude as
    alpha_D changes.
    """
    u, v, alpha_n, alpha_d = theta
    return alpha_d * jnp.logaddexp((u - alpha_n * log_n) / alpha_d, v / alpha_d - log_d)


@functools.cache
def mapped(law):
    """law(base + matrix @ free, *inputs): fixed and tied parameters as data, so one compilation serves all."""
    def law_of_free(free, matrix, base, *inputs):
        return law(base + matrix @ free, *inputs)
    return law_of_free


def kaplan_joint(theta, log_n, log_d):
    """Kaplan et al. eq. 1.5: L = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D.

    theta = (log N_c, log D_c, alpha_N, alpha_D).
    """
    log_nc, log_dc, alpha_n, alpha_d = theta
    return alpha_d * jnp.logaddexp(alpha_n / alpha_d * (log_nc - log_n), log_dc - log_d)


def _effective(unique, excess, log_r_star):
    """U + U R* (1 - exp(-R/R*)): repeated units are worth less, saturating at R* extra copies."""
    r_star = jnp.exp(log_r_star)
    return unique * (1.0 - r_star * jnp.expm1(-excess / r_star))


def data_constrained(theta, log_n, log_d, log_u):
    """Muennighoff et al. 2023: the Chinchilla law in effective parameters N' and data D'.

    theta = (log A, log B, log E, alpha, beta, log R_N*, log R_D*).
    D' = U_D + U_D R_D* (1 - exp(-R_D/R_D*)), R_D = D/U_D - 1, U_D = min(U, D)
    (a run shorter than one epoch sees only D unique tokens).
    N' likewise with U_N = min(N, N_opt(U_D)), R_N = N/U_N - 1, where N_opt(U_D)
    is the size that the base law makes compute-optimal for U_D tokens: from
    alpha A N^-alpha = beta B D^-beta at D = U_D.
    """
    a, b, e, alpha, beta, log_rn, log_rd = theta
    log_ud = jnp.minimum(log_u, log_d)
    log_n_opt = (jnp.log(alpha) + a - jnp.log(beta) - b + beta * log_ud) / alpha
    log_un = jnp.minimum(log_n, log_n_opt)
    d_eff = _effective(jnp.exp(log_ud), jnp.expm1(log_d - log_ud), log_rd)
    n_eff = _effective(jnp.exp(log_un), jnp.expm1(log_n - log_un), log_rn)
    return chinchilla((a, b, e, alpha, beta), jnp.log(n_eff), jnp.log(d_eff))
