"""Built-in policies. Importing this package registers them all, and the presets that pair them."""

from tokpress import presets  # noqa: F401, E402  (registers after the policies it names)
from tokpress.policies import fixed  # noqa: F401
from tokpress.policies.inner import aim as _aim_inner  # noqa: F401
from tokpress.policies.inner import dycoke as _dycoke_kv  # noqa: F401
from tokpress.policies.inner import (  # noqa: F401
    fastv,
    framefusion,
    pdrop,
    sparsevlm,
    sttm,
)
from tokpress.policies.inner import flashvid as _flashvid_inner  # noqa: F401
from tokpress.policies.inner import holitom as _holitom_inner  # noqa: F401
from tokpress.policies.inner import mustdrop as _mustdrop_inner  # noqa: F401
from tokpress.policies.inner import prunevid as _prunevid_inner  # noqa: F401
from tokpress.policies.outer import aim as _aim_outer  # noqa: F401
from tokpress.policies.outer import (  # noqa: F401
    divprune,
    dycoke,
    evs,
    fastvid,
    flashvid,
    framebudget,
    frames,
    holitom,
    prunevid,
    random,
    scissor,
    uniform,
    vidcom2,
    visionzip,
    vtccls,
)
from tokpress.policies.outer import mustdrop as _mustdrop_outer  # noqa: F401
