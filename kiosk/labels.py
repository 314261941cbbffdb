"""Label maps shared by training, the runtime classifier, the store and reports."""

from typing import Literal, get_args

AGE_GROUPS: tuple[str, ...] = ("0-2", "4-6", "8-12", "15-20", "25-32", "38-43", "48-53", "60-100")
# Representative age in years of each group, used for expected-age output and MAE.
AGE_GROUP_MIDPOINTS: tuple[float, ...] = (1.0, 5.0, 10.0, 17.5, 28.5, 40.5, 50.5, 70.0)
# The youngest age of each group: an age belongs to the last group that starts at or below it
# (the nearest one), so the groups cover every age and "25-32" stands for 25 to 37.
AGE_GROUP_STARTS: tuple[int, ...] = (0, 4, 8, 15, 25, 38, 48, 60)
AGE_SPANS: tuple[str, ...] = tuple(
    f"{lo}-{hi - 1}" for lo, hi in zip(AGE_GROUP_STARTS, AGE_GROUP_STARTS[1:], strict=False)
) + (f"{AGE_GROUP_STARTS[-1]}+",)
GENDERS: tuple[str, ...] = ("female", "male")
#: The shipped classifier models (``classifier.model``), each a folder under kiosk/models/.
MODEL_NAMES: tuple[str, ...] = ("accurate", "commercial")
#: A gate's verdict on a visit; a stored visit is pass/off/unmeasured, a check fail/unmeasured.
GateStatus = Literal["pass", "fail", "unmeasured", "off"]
VisitStatus = Literal["pass", "off", "unmeasured"]
CheckStatus = Literal["fail", "unmeasured"]
TEMPERATURE_STATUSES: tuple[str, ...] = get_args(GateStatus)
VISIT_STATUSES: tuple[str, ...] = get_args(VisitStatus)
CHECK_STATUSES: tuple[str, ...] = get_args(CheckStatus)


def nearest_age_group(age: float) -> str:
    """Map an exact age to the nearest Adience group (gaps closed as 0-3, 4-7, 8-14, 15-24...)."""
    for i, upper in enumerate(AGE_GROUP_STARTS[1:]):
        if age < upper:
            return AGE_GROUPS[i]
    return AGE_GROUPS[-1]
