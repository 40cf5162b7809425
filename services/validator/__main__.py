"""``python -m services.validator``: the validator's composition root."""

from kairos.entry import serve
from services.validator.service import run

serve(run)
