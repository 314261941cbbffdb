"""Label maps shared by training, the runtime classifier, the store and reports."""

from typing import Literal, get_args

AGE_GROUPS: tuple[str, ...] = ("0-2", "4-6", "8-12", "15-20", "25-32", "38-43", "48-53", "60-100")
# Representative age in years of each group, used for expected-age output and MAE.
AGE_GROUP_MIDPOINTS: tuple[float, ...] = (1.0, 5.0, 10.0, 17.5, 28.5, 40.5, 50.5, 70.0)
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
    bounds = (4, 8, 15, 25, 38, 48, 60)
    for i, upper in enumerate(bounds):
        if age < upper:
            return AGE_GROUPS[i]
    return AGE_GROUPS[-1]
