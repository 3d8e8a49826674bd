#!/usr/bin/env python3
"""Reference values of the per-step learning-rate and margin schedules,
computed from their formulas (as WeSpeaker's and 3D-Speaker's schedulers
define them), independently of nexttdnn.

    python3 tests/reference/schedules_reference.py tests/fixtures/schedules_reference.json

Standard library only; not run by `cargo test` (the JSON is committed).
"""
import json
import math
import sys

STEPS_PER_EPOCH = 37
EPOCHS = 12
STEPS = list(range(0, STEPS_PER_EPOCH * EPOCHS + 5, 7)) + [36, 37, 38, 73, 74, 75]


def warmup_cosine(step, start_lr, max_lr, min_lr, warmup_epochs, end_epoch):
    warm = warmup_epochs * STEPS_PER_EPOCH
    end = end_epoch * STEPS_PER_EPOCH
    if step < warm:
        return start_lr + (max_lr - start_lr) * step / warm
    if step < end:
        return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * (step - warm) / (end - warm)))
    return min_lr


def exponential_decrease(step, initial_lr, final_lr, warmup_epochs, warm_from_zero):
    warm = warmup_epochs * STEPS_PER_EPOCH
    total = EPOCHS * STEPS_PER_EPOCH
    coeff = step / warm if (warm_from_zero and step < warm) else 1.0
    return coeff * initial_lr * math.exp(step / total * math.log(final_lr / initial_lr))


def margin(step, initial, final, start_epoch, fix_epoch, kind):
    start = (start_epoch - 1) * STEPS_PER_EPOCH
    fix = (fix_epoch - 1) * STEPS_PER_EPOCH
    if step >= fix:
        return final
    if step < start:
        return initial
    progress = (step - start) / (fix - start)
    if kind == "Exp":
        ratio = 1.0 - math.exp(progress * math.log(1e-3 / (1.0 + 1e-6)))
    else:
        ratio = progress
    return initial + (final - initial) * ratio


def main(out):
    cases = {
        "warmup_cosine_from_zero": {
            "params": {"warmup_start_lr": 0.0, "max_lr": 1e-3, "min_lr": 1e-5, "warmup_epochs": 2.0, "decay_end_epoch": 10.0},
            "fn": lambda k, p: warmup_cosine(k, p["warmup_start_lr"], p["max_lr"], p["min_lr"], p["warmup_epochs"], p["decay_end_epoch"]),
        },
        "warmup_cosine_from_min": {
            "params": {"warmup_start_lr": 2e-5, "max_lr": 1e-4, "min_lr": 2e-5, "warmup_epochs": 1.0, "decay_end_epoch": 7.0},
            "fn": lambda k, p: warmup_cosine(k, p["warmup_start_lr"], p["max_lr"], p["min_lr"], p["warmup_epochs"], p["decay_end_epoch"]),
        },
        "exponential_warm_from_zero": {
            "params": {"initial_lr": 1e-4, "final_lr": 2.5e-5, "warmup_epochs": 1.0, "warm_from_zero": True},
            "fn": lambda k, p: exponential_decrease(k, p["initial_lr"], p["final_lr"], p["warmup_epochs"], p["warm_from_zero"]),
        },
        "exponential": {
            "params": {"initial_lr": 0.1, "final_lr": 5e-5, "warmup_epochs": 6.0, "warm_from_zero": False},
            "fn": lambda k, p: exponential_decrease(k, p["initial_lr"], p["final_lr"], p["warmup_epochs"], p["warm_from_zero"]),
        },
        "margin_exp": {
            "params": {"initial_margin": 0.0, "final_margin": 0.2, "increase_start_epoch": 3, "fix_start_epoch": 9, "increase": "Exp"},
            "fn": lambda k, p: margin(k, p["initial_margin"], p["final_margin"], p["increase_start_epoch"], p["fix_start_epoch"], p["increase"]),
        },
        "margin_linear": {
            "params": {"initial_margin": 0.1, "final_margin": 0.5, "increase_start_epoch": 2, "fix_start_epoch": 4, "increase": "Linear"},
            "fn": lambda k, p: margin(k, p["initial_margin"], p["final_margin"], p["increase_start_epoch"], p["fix_start_epoch"], p["increase"]),
        },
        "margin_fixed_from_the_start": {
            "params": {"initial_margin": 0.5, "final_margin": 0.5, "increase_start_epoch": 1, "fix_start_epoch": 1, "increase": "Exp"},
            "fn": lambda k, p: margin(k, p["initial_margin"], p["final_margin"], p["increase_start_epoch"], p["fix_start_epoch"], p["increase"]),
        },
    }
    result = {"steps_per_epoch": STEPS_PER_EPOCH, "epochs": EPOCHS}
    for name, c in cases.items():
        result[name] = {"params": c["params"], "values": {str(k): c["fn"](k, c["params"]) for k in sorted(set(STEPS))}}
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
