"""Leader election rules (client-go's): who may take the Lease, judged by the contender's own clock."""

from __future__ import annotations

from sail_operator.kube.leader import compute_lease_move


def test_the_holder_renews_and_a_free_lease_is_taken():
    assert compute_lease_move({"holderIdentity": "me"}, "me", 0.0, 15) == "renew"
    assert compute_lease_move({}, "me", 0.0, 15) == "take"
    assert compute_lease_move({"holderIdentity": ""}, "me", 0.0, 15) == "take"  # released on shutdown


def test_another_holder_is_waited_for_until_its_record_stayed_unchanged_for_the_lease_duration():
    spec = {"holderIdentity": "other", "leaseDurationSeconds": 15}
    assert compute_lease_move(spec, "me", 14.9, 99) == "wait"  # the Lease's own duration wins over ours
    assert compute_lease_move(spec, "me", 15.0, 99) == "take"
    assert compute_lease_move({"holderIdentity": "other"}, "me", 10.0, 15) == "wait"
