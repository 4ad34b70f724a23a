"""Canary rollouts as KServe's Knative mode: plan, record the rollout, plan again."""

from __future__ import annotations

from control_support import isvc, sklearn

from modelhost.control import InferenceServiceStatus, ServicePlan, plan, propagate_rollout
from modelhost.control.objects import ComponentStatusSpec

STANDARD = {"serving.kserve.io/deploymentMode": "Standard"}


def rolled(
    result: ServicePlan, status: InferenceServiceStatus | None, ready: set[str]
) -> InferenceServiceStatus:
    """What an executor writes back once the plan runs and ``ready`` revisions are ready."""
    components = dict((status.components or {}) if status else {})
    for component in result.components:
        components[component.component] = propagate_rollout(
            components.get(component.component), component, ready
        )
    return InferenceServiceStatus(components=components)


def splits(result: ServicePlan) -> list[tuple[str, int]]:
    return [(s.revision, s.percent) for s in result.component("predictor").traffic]


def test_canary_roll_out_promote_and_roll_back() -> None:
    # 1. The first revision takes everything, even with a canary percent set.
    first = plan(isvc({**sklearn("gs://b/v1"), "canaryTrafficPercent": 10}))
    rev1 = first.component("predictor").revision.name
    assert splits(first) == [(rev1, 100)]
    status = rolled(first, None, {rev1})
    assert status.components["predictor"].latest_rolledout_revision == rev1

    # 2. A new model with canaryTrafficPercent: 10 → 10% to it, 90% to the rolled-out one.
    canary = plan(isvc({**sklearn("gs://b/v2"), "canaryTrafficPercent": 10}), previous=status)
    rev2 = canary.component("predictor").revision.name
    assert rev2 != rev1
    assert splits(canary) == [(rev2, 10), (rev1, 90)]
    assert canary.component("predictor").revision_names == (rev2, rev1)
    status = rolled(canary, status, {rev1, rev2})
    predictor = status.components["predictor"]
    assert (predictor.latest_rolledout_revision, predictor.latest_ready_revision) == (rev1, rev2)
    assert [(t.revision_name, t.percent) for t in predictor.traffic] == [(rev2, 10), (rev1, 90)]

    # 3. Promotion: the field removed → 100% to the latest, which becomes rolled out.
    promoted = plan(isvc(sklearn("gs://b/v2")), previous=status)
    assert splits(promoted) == [(rev2, 100)]
    status = rolled(promoted, status, {rev1, rev2})
    predictor = status.components["predictor"]
    assert (predictor.latest_rolledout_revision, predictor.previous_rolledout_revision) == (
        rev2,
        rev1,
    )

    # 4. Rollback: canaryTrafficPercent: 0 → everything back to the previous revision.
    back = plan(isvc({**sklearn("gs://b/v2"), "canaryTrafficPercent": 0}), previous=status)
    assert splits(back) == [(rev2, 0), (rev1, 100)]
    status = rolled(back, status, {rev1, rev2})
    assert status.components["predictor"].latest_rolledout_revision == rev1
    # Planning again from the new status keeps the rollback (a fixed point).
    again = plan(isvc({**sklearn("gs://b/v2"), "canaryTrafficPercent": 0}), previous=status)
    assert splits(again) == [(rev2, 0), (rev1, 100)]

    # 5. Removing the field promotes the latest once more.
    final = plan(isvc(sklearn("gs://b/v2")), previous=status)
    assert splits(final) == [(rev2, 100)]
    status = rolled(final, status, {rev2})
    predictor = status.components["predictor"]
    assert (predictor.latest_rolledout_revision, predictor.previous_rolledout_revision) == (
        rev2,
        rev1,
    )


def test_rollback_during_a_canary() -> None:
    rev1 = plan(isvc(sklearn("gs://b/v1"))).component("predictor").revision.name
    status = InferenceServiceStatus(
        components={"predictor": ComponentStatusSpec(latest_rolledout_revision=rev1)}
    )
    result = plan(isvc({**sklearn("gs://b/v2"), "canaryTrafficPercent": 0}), previous=status)
    rev2 = result.component("predictor").revision.name
    assert splits(result) == [(rev2, 0), (rev1, 100)]


def test_canary_share_waits_for_the_new_revision_to_be_ready() -> None:
    first = plan(isvc(sklearn("gs://b/v1")))
    rev1 = first.component("predictor").revision.name
    status = rolled(first, None, {rev1})
    canary = plan(isvc({**sklearn("gs://b/v2"), "canaryTrafficPercent": 30}), previous=status)
    status = rolled(canary, status, {rev1})  # the new revision is not ready yet
    predictor = status.components["predictor"]
    assert [(t.revision_name, t.percent) for t in predictor.traffic] == [(rev1, 30), (rev1, 70)]
    assert predictor.latest_rolledout_revision == rev1
    assert predictor.latest_created_revision == canary.component("predictor").revision.name


def test_rolling_update_without_canary_moves_all_traffic_once_ready() -> None:
    first = plan(isvc(sklearn("gs://b/v1")))
    rev1 = first.component("predictor").revision.name
    status = rolled(first, None, {rev1})
    update = plan(isvc(sklearn("gs://b/v2")), previous=status)
    rev2 = update.component("predictor").revision.name
    assert splits(update) == [(rev2, 100)]
    waiting = rolled(update, status, {rev1})
    assert waiting.components["predictor"].traffic[0].revision_name == rev1
    assert waiting.components["predictor"].latest_rolledout_revision == rev1
    done = rolled(update, waiting, {rev1, rev2})
    assert done.components["predictor"].latest_rolledout_revision == rev2


def test_status_in_the_object_is_used_and_tags_are_added_on_request() -> None:
    rev1 = plan(isvc(sklearn("gs://b/v1"))).component("predictor").revision.name
    source = isvc(
        {**sklearn("gs://b/v2"), "canaryTrafficPercent": 25},
        annotations={"serving.kserve.io/enable-tag-routing": "true"},
        status={"components": {"predictor": {"latestRolledoutRevision": rev1}}},
    )
    traffic = plan(source).component("predictor").traffic
    assert [(s.percent, s.tag, s.latest) for s in traffic] == [
        (25, "latest", True),
        (75, "prev", False),
    ]


def test_canary_percent_is_ignored_in_standard_mode_with_a_warning() -> None:
    status = InferenceServiceStatus(
        components={"predictor": ComponentStatusSpec(latest_rolledout_revision="old")}
    )
    result = plan(
        isvc({**sklearn(), "canaryTrafficPercent": 10}, annotations=STANDARD), previous=status
    )
    assert splits(result) == [(result.component("predictor").revision.name, 100)]
    assert "canaryTrafficPercent is ignored in Standard mode" in result.warnings[0]
