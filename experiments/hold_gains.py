"""How steer_hold's default gains were chosen: its PI rule on a toy model of the plant, over a range of gains.

The plant (fitted to the first 4 steps of the embedded model on the medical data, layer-19 vector): the
calibration reading drifts by ``lr_t * (d - c * alpha)`` per step in |v| units, d = 0.148 and c = 0.18 at
lr 1e-3 (0.11 |v| up in two warm-up steps at alpha 0, 0.16 |v| down in two steps at alpha 1.33), passed
through an exponential moving average (Adam's first moment) as a lag. The rule is
`steerlab.train.arms.steer_hold.pi_update`. Printed per setting: the worst peak |error| and the worst final
|error| over plant gains 0.7-2.5x and lags beta 0-0.6. A toy: it ranks settings, it does not predict a run.

    python experiments/hold_gains.py
"""

from __future__ import annotations

from steerlab.train.arms.steer_hold import PIState, SteerHoldArmConfig, pi_update

STEPS, WARMUP = 32, 4  # the grid's medical cell: 256 chats / 8, linear schedule with 4 warm-up steps


def lr(step: int) -> float:
    return step / WARMUP if step <= WARMUP else max(0.0, (STEPS - step) / (STEPS - WARMUP))


def simulate(cfg: SteerHoldArmConfig, gain: float, beta: float) -> list[float]:
    d, c = 0.148 * gain, 0.18 * gain
    state, drift, momentum, alpha, errors = PIState(0.0), 0.0, 0.0, cfg.alpha_start, []
    for step in range(1, STEPS + 1):
        momentum = beta * momentum + (1 - beta) * (d - c * alpha)
        drift += lr(step) * momentum / (1 - beta**step)
        if step % cfg.every == 0:
            _, state.integral, alpha = pi_update(cfg, state, drift, 1.0)
        errors.append(drift)
    return errors


if __name__ == "__main__":
    for kp, ki, every in [(10, 2, 2), (4, 2, 2), (5, 1, 2), (3, 1, 1), (4, 1, 1), (5, 2, 1), (6, 3, 1)]:
        cfg = SteerHoldArmConfig(vector="-", kp=kp, ki=ki, every=every)
        runs = [simulate(cfg, g, b) for g in (0.7, 1.0, 1.5, 2.5) for b in (0.0, 0.3, 0.6)]
        peak = max(max(abs(e) for e in r) for r in runs)
        final = max(abs(r[-1]) for r in runs)
        print(
            f"kp {kp:>2} ki {ki} every {every}: worst peak |e| {peak:.3f}, worst final |e| {final:.3f} (|v| units)"
        )
