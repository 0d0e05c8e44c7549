"""The autoscaling simulator: replica model (`model`), calibrated profiles (`profiles`),
traces (`traces`), the policies compared (`policies`), the run and its table (`sim`),
pictures (`plots`) and the check against a real engine (`real`).

    python -m bench.autoscale.sim          # or: make bench-autoscale
"""
