"""Built-in policies. Importing this package registers them all."""

from tokpress.policies import fixed  # noqa: F401
from tokpress.policies.inner import fastv  # noqa: F401
from tokpress.policies.outer import evs, frames, random, uniform  # noqa: F401
